import { describe, expect, it } from "vitest";
import { retarget } from "../../../../agent/migration/source.js";

describe("retarget", () => {
  const live = `<domain type='qemu'>
  <name>ins-abcd1234</name>
  <metadata>
    <cdh:instance xmlns:cdh="urn:x">{"hostId":"host-aaaaaaaa"}</cdh:instance>
  </metadata>
  <devices>
    <disk type='file' device='disk'>
      <source file='/a/pools/local/disk-11111111.qcow2'/>
      <backingStore type='file' index='1'>
        <format type='qcow2'/>
        <source file='/a/images/img-1.qcow2'/>
        <backingStore type='file' index='2'><format type='raw'/><source file='/a/x.raw'/><backingStore/></backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/a/instances/ins-abcd1234/config.iso'/>
    </disk>
    <serial type='unix'><source mode='bind' path='/a/instances/ins-abcd1234/serial.sock'/></serial>
  </devices>
</domain>`;
  const dest = `<domain><metadata>
    <cdh:instance xmlns:cdh="urn:x">{"hostId":"host-bbbbbbbb"}</cdh:instance>
  </metadata></domain>`;

  it("puts the destination's paths and metadata into the running definition and drops the backing chain", () => {
    const out = retarget(
      live,
      [
        ["/a/pools/local/disk-11111111.qcow2", "/b/pools/local/disk-11111111.qcow2"],
        ["/a/instances/ins-abcd1234", "/b/instances/ins-abcd1234"],
      ],
      dest,
    );
    expect(out).toContain("<source file='/b/pools/local/disk-11111111.qcow2'/>");
    expect(out).toContain("<source file='/b/instances/ins-abcd1234/config.iso'/>");
    expect(out).toContain("path='/b/instances/ins-abcd1234/serial.sock'");
    expect(out).toContain('"hostId":"host-bbbbbbbb"');
    expect(out).not.toContain("host-aaaaaaaa");
    expect(out).not.toContain("backingStore");
    expect(out).not.toContain("/a/");
    expect(out).toContain("<target dev='vda' bus='virtio'/>");
  });
});
