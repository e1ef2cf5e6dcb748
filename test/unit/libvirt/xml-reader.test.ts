import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import fc from "fast-check";
import { XMLParser } from "fast-xml-parser";
import { describe, expect, it } from "vitest";
import { readXml, XmlReadError } from "../../../drivers/libvirt/xml-reader.js";

/** The options domain-xml.ts gave fast-xml-parser before it read XML with xml-reader.ts. */
const ARRAYS = new Set(["domain.devices.disk", "domain.devices.interface", "domain.devices.interface.filterref.parameter", "domain.sysinfo.system.entry"]);
const fxp = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  htmlEntities: true,
  isArray: (_name, jpath) => ARRAYS.has(String(jpath)),
});

/** fast-xml-parser's tree without the declaration, as plain JSON (readXml's objects have no prototype). */
function reference(xml: string): unknown {
  const doc = fxp.parse(xml) as Record<string, unknown>;
  delete doc["?xml"];
  return JSON.parse(JSON.stringify(doc));
}
const plain = (value: unknown) => JSON.parse(JSON.stringify(value)) as unknown;

const golden = resolve(import.meta.dirname, "../../golden");

describe("readXml", () => {
  it("reads every golden domain XML exactly as fast-xml-parser does", () => {
    const files = readdirSync(golden).filter((f) => f.endsWith(".xml"));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const f of files) {
      const xml = readFileSync(resolve(golden, f), "utf8");
      expect(plain(readXml(xml, ARRAYS)), f).toEqual(reference(xml));
    }
  });

  it("decodes references, keeps namespaced names, and shapes text, attributes and repeats like fast-xml-parser", () => {
    const xml = `<?xml version="1.0"?>
<domain type='kvm'><!-- a comment -->
  <name>a&amp;b &lt;x&gt; &#65;&#x42; &apos;&quot;</name>
  <metadata><cdh:instance xmlns:cdh="https://x/1"><cdh:record format="json">{"k":"&lt;v&gt;"}</cdh:record></cdh:instance></metadata>
  <empty/><empty2></empty2><blank>   </blank>
  <rep>1</rep><rep a="2"/><rep>3</rep>
  <devices><disk device='disk'><target dev="vda"/></disk><interface type='network'>  padded text  <mac address='52:54:00:00:00:01'/></interface></devices>
</domain>`;
    const doc = plain(readXml(xml, ARRAYS)) as { domain: Record<string, unknown> };
    expect(doc).toEqual(reference(xml));
    expect(doc.domain.name).toBe(`a&b <x> AB '"`);
    expect(doc.domain.empty).toBe("");
    expect(doc.domain.rep).toEqual(["1", { "@_a": "2" }, "3"]);
    // CDATA is text as written (not decoded), trimmed with the element's text.
    expect(plain(readXml("<d><t> a <![CDATA[ <raw> &amp; ]]></t></d>"))).toEqual({ d: { t: "a  <raw> &amp;" } });
  });

  it("agrees with fast-xml-parser on random well-formed documents", () => {
    const name = fc.constantFrom("a", "b", "disk", "cdh:x", "entry");
    const text = fc.stringMatching(/^[ a-z0-9&<>"']{0,12}$/).map((t) => t.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"));
    const attr = fc.tuple(fc.constantFrom("x", "y", "dev", "xmlns:cdh"), fc.stringMatching(/^[a-z0-9 &<]{0,6}$/)).map(([k, v]) => ` ${k}="${v.replace(/&/g, "&amp;").replace(/</g, "&lt;")}"`);
    const { element } = fc.letrec<{ element: string }>((tie) => ({
      element: fc
        .tuple(name, fc.uniqueArray(attr, { selector: (a) => a.split("=")[0], maxLength: 2 }), fc.oneof(text, fc.array(tie("element"), { maxLength: 3 })))
        .map(([n, attrs, body]) => (typeof body === "string" && body === "" && attrs.length % 2 === 0 ? `<${n}${attrs.join("")}/>` : `<${n}${attrs.join("")}>${typeof body === "string" ? body : body.join("\n  ")}</${n}>`)),
    }));
    fc.assert(
      fc.property(element, (inner) => {
        const xml = `<domain>${inner}</domain>`;
        expect(plain(readXml(xml, ARRAYS))).toEqual(reference(xml));
      }),
      { numRuns: 300, seed: 20261207 },
    );
  });

  it("refuses XML that is not well-formed", () => {
    for (const bad of ["<domain><name>x</nam></domain>", "<domain><name>x</name>", "<domain><name x=1>y</name></domain>", "text<domain/>", "<domain><!-- open</domain>", "</domain>"]) {
      expect(() => readXml(bad), bad).toThrow(XmlReadError);
    }
  });
});
