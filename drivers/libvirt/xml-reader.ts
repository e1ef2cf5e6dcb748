/**
 * A small, fast reader of the XML libvirt writes (domain definitions), into the object
 * shape fast-xml-parser gives with the options domain-xml.ts used: attributes as `@_name`,
 * an element's text as `#text` beside its attributes or children (trimmed, as attribute
 * values are; whitespace-only text dropped), an element with neither attributes nor
 * children as its text (`""` when empty), a repeated child as an array, and the children
 * named in `arrays` (by their dotted path, e.g. `domain.devices.disk`) always as arrays.
 * Character references and the five XML entities are decoded; comments, processing
 * instructions and the declaration are skipped; CDATA is text, trimmed with the rest of the
 * element's text (fast-xml-parser keeps it as written; libvirt writes none).
 *
 * Why not fast-xml-parser (still the builder): start-up recovery reads every domain's
 * persistent XML, and fast-xml-parser 5 took about 0.5 ms per 5 KB domain on the 2-CPU host,
 * half a second for 1,000 domains, with as much garbage; this reader takes a tenth of that
 * (bench (b), README). It is not a validating parser: it refuses a closing tag that does not
 * match, an unclosed element, a tag it cannot read and text outside the root element, which
 * is all a well-formed libvirt document can get wrong on the way here.
 * test/unit/libvirt/xml-reader.test.ts checks it against fast-xml-parser on the golden XML.
 */

export type XmlValue = string | XmlObject | XmlValue[];
export interface XmlObject {
  [key: string]: XmlValue;
}

export class XmlReadError extends Error {
  override name = "XmlReadError";
}

/** A start tag from `<` on: its name, its attributes and whether it closes itself. */
const START_TAG = /<([^\s/>!?]+)((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>/y;
const ATTRIBUTE = /([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
const END_TAG = /<\/([^\s>]+)\s*>/y;
const REFERENCE = /&(?:#(\d+)|#x([0-9a-fA-F]+)|(lt|gt|amp|quot|apos));/g;
const NAMED: Readonly<Record<string, string>> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

interface Open {
  name: string;
  path: string;
  node: XmlObject;
  text: string;
  /** Whether the node has attributes or children (else it is its text). */
  hasKeys: boolean;
}

/** Decodes character references and the five XML entities (others stay as written). */
export function decodeXmlText(raw: string): string {
  if (!raw.includes("&")) return raw;
  return raw.replace(REFERENCE, (whole, dec: string | undefined, hex: string | undefined, name: string | undefined) => {
    if (name !== undefined) return NAMED[name] ?? whole;
    const code = dec !== undefined ? Number(dec) : parseInt(hex!, 16);
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
  });
}

/** Reads a document; `arrays` lists the dotted element paths that are always arrays. */
export function readXml(xml: string, arrays: ReadonlySet<string> = new Set()): XmlObject {
  const root: Open = { name: "", path: "", node: Object.create(null) as XmlObject, text: "", hasKeys: false };
  const stack: Open[] = [root];
  let pos = 0;
  for (;;) {
    const lt = xml.indexOf("<", pos);
    const top = stack[stack.length - 1]!;
    const text = xml.slice(pos, lt < 0 ? xml.length : lt);
    if (text.length > 0) {
      if (top === root) {
        if (text.trim() !== "") throw new XmlReadError("text outside the root element");
      } else top.text += text;
    }
    if (lt < 0) break;
    const next = xml.charCodeAt(lt + 1);
    if (next === 0x3f /* ? */) {
      pos = skipPast(xml, "?>", lt);
    } else if (next === 0x21 /* ! */) {
      if (xml.startsWith("<!--", lt)) pos = skipPast(xml, "-->", lt);
      else if (xml.startsWith("<![CDATA[", lt)) {
        const end = xml.indexOf("]]>", lt);
        if (end < 0) throw new XmlReadError("unterminated CDATA section");
        // CDATA is text as written: keep it apart from references by encoding its ampersands.
        top.text += xml.slice(lt + 9, end).replaceAll("&", "&amp;");
        pos = end + 3;
      } else pos = skipPast(xml, ">", lt); // <!DOCTYPE …> (libvirt writes none)
    } else if (next === 0x2f /* / */) {
      END_TAG.lastIndex = lt;
      const m = END_TAG.exec(xml);
      if (!m) throw new XmlReadError(`unreadable closing tag at offset ${lt}`);
      if (top === root || m[1] !== top.name) throw new XmlReadError(`closing tag </${m[1]}> does not match <${top.name || "(none)"}>`);
      stack.pop();
      attach(stack[stack.length - 1]!, top, arrays);
      pos = lt + m[0].length;
    } else {
      START_TAG.lastIndex = lt;
      const m = START_TAG.exec(xml);
      if (!m) throw new XmlReadError(`unreadable tag at offset ${lt}`);
      const name = m[1]!;
      const open: Open = { name, path: top === root ? name : `${top.path}.${name}`, node: Object.create(null) as XmlObject, text: "", hasKeys: false };
      const attrs = m[2]!;
      if (attrs.length > 0) {
        ATTRIBUTE.lastIndex = 0;
        for (let a = ATTRIBUTE.exec(attrs); a !== null; a = ATTRIBUTE.exec(attrs)) {
          open.node[`@_${a[1]!}`] = decodeXmlText((a[2] ?? a[3] ?? "").trim());
          open.hasKeys = true;
        }
      }
      pos = lt + m[0].length;
      if (m[3] === "/") attach(top, open, arrays);
      else stack.push(open);
    }
  }
  if (stack.length > 1) throw new XmlReadError(`element <${stack[stack.length - 1]!.name}> is not closed`);
  return root.node;
}

function skipPast(xml: string, end: string, from: number): number {
  const at = xml.indexOf(end, from);
  if (at < 0) throw new XmlReadError(`unterminated markup at offset ${from}`);
  return at + end.length;
}

/** Hangs a closed element on its parent (an array when repeated or listed in `arrays`). */
function attach(parent: Open, child: Open, arrays: ReadonlySet<string>): void {
  const text = child.text.length > 0 ? decodeXmlText(child.text.trim()) : "";
  let value: XmlValue;
  if (child.hasKeys) {
    if (text !== "") child.node["#text"] = text;
    value = child.node;
  } else value = text;
  // An element's own value is never an array, so an array here is the list of its namesakes.
  const existing = parent.node[child.name];
  if (existing === undefined) parent.node[child.name] = arrays.has(child.path) ? [value] : value;
  else if (Array.isArray(existing)) existing.push(value);
  else parent.node[child.name] = [existing, value];
  parent.hasKeys = true;
}
