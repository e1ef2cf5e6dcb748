/** What qemu-img tells about an image file. */
export interface ImageInfo {
  /** The format qemu-img detected from the content: qcow2, raw, vmdk, vpc (vhd), … */
  format: string;
  virtualSizeBytes: number;
  /** Bytes the file really takes on disk. */
  actualSizeBytes: number;
  /** The backing file, if any (absolute as qemu-img reports it). */
  backingFile?: string;
  backingFormat?: string;
  /** For qcow2: whether qemu-img check-style corruption flags are set. */
  corrupt?: boolean;
}

export interface ImageTool {
  /** `qemu-img info --output=json`; the format is read from the content, never from the name. */
  info(path: string, options?: { signal?: AbortSignal }): Promise<ImageInfo>;
  /** Every file in the backing chain, top first (`--backing-chain`). */
  backingChain(path: string): Promise<Array<ImageInfo & { filename: string }>>;
  /**
   * `qemu-img convert` into qcow2 (or raw). With `onProgress`, qemu-img runs with `-p`
   * and its percentages (0–100) are passed on as they come.
   */
  convert(options: {
    source: string;
    sourceFormat: string;
    target: string;
    targetFormat: "qcow2" | "raw";
    signal?: AbortSignal;
    onProgress?: (percent: number) => void;
    /** Read an image a running guest has open (-U): the caller makes the copy consistent. */
    forceShare?: boolean;
  }): Promise<void>;
  /** A qcow2 overlay on a backing file, with the given virtual size. */
  createOverlay(options: { backing: string; backingFormat: "qcow2" | "raw"; target: string; sizeBytes: number }): Promise<void>;
  /** An empty image. */
  create(options: { target: string; format: "qcow2" | "raw"; sizeBytes: number }): Promise<void>;
  /** Grows an image (never shrinks). */
  resize(options: { target: string; format: "qcow2" | "raw"; sizeBytes: number }): Promise<void>;
}

/** What `qemu-img check` found. */
export interface ImageCheck {
  /** False when the format has no consistency check (vpc, raw): nothing was checked. */
  supported: boolean;
  /** Corruptions, or errors that kept the check from completing; 0 when sound. */
  errors: number;
  /** Leaked clusters (harmless: space only). */
  leaks: number;
  /** qemu-img's own words when something is wrong. */
  message: string;
}

/** The reads an image import needs beyond ImageTool (implemented by QemuImg). */
export interface ImageInspector {
  /** `qemu-img check` of an image in the given format (metadata only, nothing repaired). */
  check(path: string, format: string, options?: { signal?: AbortSignal }): Promise<ImageCheck>;
  /**
   * The first `bytes` guest-visible bytes of an image read through its format
   * (`qemu-img dd`), using `scratchFile` (removed afterwards) as the output.
   * Shorter when the image is smaller.
   */
  readHead(options: { path: string; format: string; bytes: number; scratchFile: string; signal?: AbortSignal }): Promise<Buffer>;
  /**
   * `qemu-img compare`: true when both images show the guest the same bytes, whatever
   * their formats and allocation (a larger image's tail must read as zeros: callers that
   * need equal sizes check them first). Stops at the first difference.
   */
  sameContent(a: { path: string; format: string }, b: { path: string; format: string }, options?: { signal?: AbortSignal }): Promise<boolean>;
}
