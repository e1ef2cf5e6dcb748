/**
 * Request targets → canonical paths. Strict on purpose: anything that is not a
 * plain absolute path is refused (the server answers 404), so no spelling of a
 * path can reach something its plain spelling does not.
 *
 * Refused: a target not starting with `/` (absolute-form, `*`), a query or
 * fragment, an empty segment inside the path (`//`), `.` and `..` segments (also
 * percent-encoded), an encoded `/` or `\`, control characters, malformed percent
 * escapes, raw characters outside printable ASCII, and targets longer than MAX_TARGET_LENGTH. Percent-escapes of other
 * characters are decoded (`%3A` → `:`). A final `/` is kept: it names a folder.
 */

export const MAX_TARGET_LENGTH = 1024;

/** Anything that needs the careful path: query, fragment, escapes, dots, `//`, `\`, non-printables. */
const NEEDS_CARE = /[?#%\\]|\/\/|\/\.|[^\x21-\x7e]/;
const RAW_UNPRINTABLE = /[^\x21-\x7e]/;
const BAD_DECODED = /[/\\\x00-\x1f\x7f]/;

/** The canonical path of a request target, or undefined when it must be refused. */
export function canonicalPath(target: string | undefined): string | undefined {
  if (target === undefined || target.length === 0 || target.length > MAX_TARGET_LENGTH) return undefined;
  if (target.charCodeAt(0) !== 0x2f) return undefined;
  if (!NEEDS_CARE.test(target)) return target;
  if (target.includes("?") || target.includes("#") || RAW_UNPRINTABLE.test(target)) return undefined;
  const segments = target.split("/");
  const out: string[] = [];
  for (let i = 1; i < segments.length; i++) {
    const raw = segments[i]!;
    const last = i === segments.length - 1;
    if (raw === "") {
      if (!last) return undefined;
      out.push("");
      continue;
    }
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      return undefined;
    }
    if (decoded === "." || decoded === ".." || BAD_DECODED.test(decoded)) return undefined;
    out.push(decoded);
  }
  return `/${out.join("/")}`;
}
