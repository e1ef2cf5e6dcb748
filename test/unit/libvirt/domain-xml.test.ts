import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  buildDomainXml,
  buildMetadataElement,
  DomainXmlError,
  parseDomainXml,
} from "../../../drivers/libvirt/domain-xml.js";
import { biosKvmSpec, uefiQemuSpec } from "./specs.js";

const golden = (name: string): string =>
  readFileSync(fileURLToPath(new URL(`../../golden/${name}`, import.meta.url)), "utf8");

describe("buildDomainXml", () => {
  it("renders the bios + kvm domain exactly as the golden file", () => {
    expect(buildDomainXml(biosKvmSpec)).toBe(golden("domain-bios-kvm.xml"));
  });

  it("renders the minimal uefi + qemu domain exactly as the golden file", () => {
    expect(buildDomainXml(uefiQemuSpec)).toBe(golden("domain-uefi-qemu.xml"));
  });

  it("gives kvm domains a host-model CPU and TCG domains no <cpu> element", () => {
    expect(buildDomainXml(biosKvmSpec)).toContain('<cpu mode="host-model"/>');
    expect(buildDomainXml(uefiQemuSpec)).not.toContain("<cpu");
  });

  it("uses per-device boot order, never <boot dev>", () => {
    const xml = buildDomainXml(biosKvmSpec);
    expect(xml).toContain('<boot order="1"/>');
    expect(xml).not.toContain("<boot dev");
  });

  it("escapes metadata text so that any JSON survives", () => {
    const metadata = JSON.stringify({ evil: "</cdh:record><x a='1'>&amp;]]>" });
    const xml = buildDomainXml({ ...uefiQemuSpec, metadata });
    expect(xml).not.toContain("</cdh:record><x");
    expect(parseDomainXml(xml).metadata).toBe(metadata);
  });

  it("refuses a uefi domain without an NVRAM path", () => {
    const { nvramPath: _omit, ...spec } = uefiQemuSpec;
    expect(() => buildDomainXml(spec)).toThrow(DomainXmlError);
  });

  it("renders the metadata element that virsh metadata --set takes", () => {
    expect(buildMetadataElement('{"a":"<b> & c"}')).toBe(
      '<instance><record format="json">{"a":"&lt;b&gt; &amp; c"}</record></instance>',
    );
  });
});

describe("parseDomainXml", () => {
  it("reads back the spec it was built from (bios + kvm)", () => {
    expect(parseDomainXml(buildDomainXml(biosKvmSpec))).toEqual(biosKvmSpec);
  });

  it("reads back the spec it was built from (uefi + qemu)", () => {
    expect(parseDomainXml(buildDomainXml(uefiQemuSpec))).toEqual(uefiQemuSpec);
  });

  it("reads a running domain as libvirt 9.0 dumps it, ignoring what libvirt added", () => {
    const spec = parseDomainXml(golden("dumpxml-running-tcg.xml"));
    expect(spec).toEqual({
      name: "drvtest-capture",
      uuid: "6f1c2a9e-3b4d-4c5e-8f70-112233445566",
      virtType: "qemu",
      vcpus: 2,
      memoryMiB: 256,
      firmware: "bios",
      disks: [
        {
          device: "disk",
          target: "vda",
          bus: "virtio",
          path: "/tmp/drvtest-cap/disk.qcow2",
          format: "qcow2",
          serial: "disk-rt7k2m9x",
          bootOrder: 1,
        },
        { device: "disk", target: "vdb", bus: "virtio", path: "/tmp/drvtest-cap/data.raw", format: "raw", serial: "disk-da4p8wz1" },
        { device: "cdrom", target: "sda", bus: "sata", path: "/tmp/drvtest-cap/cd.iso", format: "raw", readonly: true },
        { device: "cdrom", target: "sdb", bus: "sata", format: "raw", readonly: true },
      ],
      nics: [
        {
          mac: "52:54:00:3a:7f:01",
          source: { network: "drvtest-capnet" },
          // The live XML names the tap libvirt picked.
          targetDev: "vnet0",
          filter: { name: "clean-traffic", parameters: { IP: "192.168.251.17" } },
        },
        { mac: "52:54:00:3a:7f:02", source: { network: "drvtest-capnet" }, targetDev: "cdh-7k2m9xqa" },
      ],
      consoleLogPath: "/tmp/drvtest-cap/tcg-console.log",
      guestAgent: true,
      // VNC on 127.0.0.1:5900 (a definition of an older agent) is not the agent's console.
      vnc: false,
      smbios: biosKvmSpec.smbios,
      metadata: biosKvmSpec.metadata,
    });
  });

  it("converts memory from the KiB libvirt writes back to MiB", () => {
    const xml = buildDomainXml(uefiQemuSpec).replace(/<memory unit="MiB">512<\/memory>/, "<memory unit='KiB'>1048576</memory>");
    expect(parseDomainXml(xml).memoryMiB).toBe(1024);
  });

  it("finds the agent's record under whatever prefix libvirt gives the namespace", () => {
    const xml =
      "<domain type='qemu'><name>x</name><uuid>u</uuid><memory>1024</memory><vcpu>1</vcpu>" +
      "<metadata><other:thing xmlns:other='https://example.org/x'><other:record>no</other:record></other:thing>" +
      "<zz:instance xmlns:zz='https://cdh-agent.dev/xmlns/instance/1'><zz:record format='json'>{&quot;a&quot;:1}</zz:record></zz:instance>" +
      "</metadata><os><type>hvm</type></os><devices/></domain>";
    expect(parseDomainXml(xml).metadata).toBe('{"a":1}');
  });

  it("returns an empty record for a domain the agent did not define", () => {
    const xml = "<domain type='kvm'><name>x</name><uuid>u</uuid><memory unit='KiB'>1024</memory><vcpu>1</vcpu></domain>";
    expect(parseDomainXml(xml)).toMatchObject({ name: "x", metadata: "", disks: [], nics: [], memoryMiB: 1 });
  });

  it("rejects XML that is not a kvm or qemu domain", () => {
    expect(() => parseDomainXml("<domain type='xen'><name>x</name></domain>")).toThrow(DomainXmlError);
    expect(() => parseDomainXml("<network/>")).toThrow(DomainXmlError);
  });
});
