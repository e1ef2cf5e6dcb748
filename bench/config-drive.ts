/**
 * (e) Building a config drive with buildConfigDrive (stage the files, xorriso, fsync,
 * rename, SHA-256) against xorriso alone on the same staged files with the same
 * options and environment, both spawned through execa. Alternating, after a warm-up.
 */
import { execa } from "execa";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { buildConfigDrive, CONFIG_DRIVE_EPOCH_SECONDS, configDriveFiles } from "../cloud-init/config-drive.js";
import { renderGuestDocuments } from "../cloud-init/documents.js";
import { LocalRunner } from "../drivers/exec/local.js";
import { benchGuestConfig } from "./fixture.js";
import { median, ratioRow, type Row } from "./stats.js";

export async function benchConfigDrive(o: { workDir: string; runs: number; log: (line: string) => void }): Promise<Row[]> {
  const files = configDriveFiles(renderGuestDocuments(benchGuestConfig()));
  const runner = new LocalRunner();
  const outPath = join(o.workDir, "config-drive.iso");
  const tmpDir = join(o.workDir, "tmp");

  // The baseline's staging: the same tree buildConfigDrive writes.
  const root = join(o.workDir, "staged", "root");
  for (const [path, content] of files) {
    const target = join(root, ...path.split("/"));
    await mkdir(dirname(target), { recursive: true, mode: 0o700 });
    await writeFile(target, content, { mode: 0o600 });
  }
  const stamp = "2000010100000000"; // CONFIG_DRIVE_EPOCH_SECONDS in xorriso's form
  const baseIso = join(o.workDir, "baseline.iso");
  const xorriso = () =>
    execa(
      "xorriso",
      ["-as", "mkisofs", "-quiet", "-input-charset", "utf-8", "-o", baseIso, "-V", "config-2", "-J", "-r", "-l",
        "-allow-lowercase", "-allow-multidot", `--modification-date=${stamp}`, "--set_all_file_dates", stamp, root],
      { env: { SOURCE_DATE_EPOCH: String(CONFIG_DRIVE_EPOCH_SECONDS) }, stdin: "ignore" },
    );
  const ours = () => buildConfigDrive({ runner, files, outPath, label: "config-2", tmpDir });

  // Same bytes from both, or the comparison means nothing.
  const built = await ours();
  await xorriso();
  const baseSha = createHash("sha256").update(await readFile(baseIso)).digest("hex");
  if (baseSha !== built.sha256) o.log("  (e) note: the baseline ISO differs from the agent's (options drifted?)");

  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < 2; i++) {
    await ours();
    await xorriso();
  }
  for (let i = 0; i < o.runs; i++) {
    let t = performance.now();
    await ours();
    a.push(performance.now() - t);
    t = performance.now();
    await xorriso();
    b.push(performance.now() - t);
  }
  await rm(join(o.workDir, "staged"), { recursive: true, force: true });
  return [
    ratioRow({ part: "(e)", what: `config drive build (median of ${o.runs})`, ours: median(a), baseline: median(b), unit: "ms", max: 1.2 }),
  ];
}
