/**
 * Reading the agent's JSON log lines as text: JSON.parse keeps the last of two equal
 * keys silently, so a line that repeats a key (two child bindings of `component`, a
 * field logged beside a base binding) is only visible in the raw text.
 */

/** The keys of a JSON object's top level, in order, repeats included. */
export function topLevelKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      let j = i + 1;
      while (j < line.length && line[j] !== '"') j += line[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(line.slice(i, j + 1)) as string);
        expectKey = false;
      }
      i = j;
    } else if (c === "{" || c === "[") {
      depth++;
      if (c === "{" && depth === 1) expectKey = true;
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/** Every log line (of a JSON-lines text) that repeats a top-level key, with the keys it repeats. */
export function linesWithRepeatedKeys(text: string): { line: string; repeated: string[] }[] {
  const found: { line: string; repeated: string[] }[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    const keys = topLevelKeys(line);
    const repeated = [...new Set(keys.filter((k, i) => keys.indexOf(k) !== i))];
    if (repeated.length > 0) found.push({ line, repeated });
  }
  return found;
}
