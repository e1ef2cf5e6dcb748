/**
 * A small, deterministic YAML writer for the documents cloud-init reads
 * (cloud-config, NoCloud meta-data and network-config).
 *
 * Block style for mappings and sequences; every string is written as a JSON string,
 * which is a valid YAML double-quoted scalar, so no value is ever re-typed by the
 * reader ("no", "on", "0755", "1e3" and ":" stay strings). Keys are written plain when
 * they are simple identifiers, quoted otherwise. Entries whose value is `undefined`
 * are left out, like JSON.stringify does.
 */

export type YamlValue = string | number | boolean | null | undefined | readonly YamlValue[] | { readonly [key: string]: YamlValue };

/** Renders a mapping as a YAML document (no "---", ends with a newline). */
export function renderYaml(value: { readonly [key: string]: YamlValue }): string {
  const lines = blockLines(value, "");
  return lines.length === 0 ? "{}\n" : `${lines.join("\n")}\n`;
}

function isMapping(value: YamlValue): value is { readonly [key: string]: YamlValue } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A mapping or sequence with at least one entry: written as a block. */
function isBlock(value: YamlValue): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (isMapping(value)) return Object.values(value).some((v) => v !== undefined);
  return false;
}

function scalar(value: YamlValue): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "[]";
  if (isMapping(value)) return "{}";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`YAML: cannot write the number ${value}`);
    return String(value);
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  throw new Error(`YAML: cannot write a value of type ${typeof value}`);
}

function key(name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_-]*$/.test(name) ? name : JSON.stringify(name);
}

function blockLines(value: YamlValue, indent: string): string[] {
  const out: string[] = [];
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    for (const item of value as readonly YamlValue[]) {
      if (item === undefined) throw new Error("YAML: a sequence cannot hold undefined");
      if (isBlock(item)) {
        // The item's own lines are indented by two more; its first line takes the dash.
        const lines = blockLines(item, inner);
        out.push(`${indent}- ${lines[0]!.slice(inner.length)}`, ...lines.slice(1));
      } else {
        out.push(`${indent}- ${scalar(item)}`);
      }
    }
    return out;
  }
  if (isMapping(value)) {
    for (const [name, item] of Object.entries(value)) {
      if (item === undefined) continue;
      if (isBlock(item)) out.push(`${indent}${key(name)}:`, ...blockLines(item, inner));
      else out.push(`${indent}${key(name)}: ${scalar(item)}`);
    }
    return out;
  }
  throw new Error("YAML: a block must be a mapping or a sequence");
}
