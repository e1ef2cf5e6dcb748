/**
 * One Linux guest, as the agent would describe it: the source of the config drive (e)
 * and of the metadata site (d). The same shape as the unit tests' linuxConfig()
 * (test/unit/cloud-init/guest-configs.ts), kept here because bench/ is built without test/.
 */
import type { GuestConfig } from "../cloud-init/types.js";

/** `openssl passwd -6 -salt Xy7pQ2rT 'Plain-Pass-123'` */
const LINUX_HASH = "$6$Xy7pQ2rT$F46Tc4C6uBI5iHGeeEWE8GyiXHqPxH9G0q.6FRzlDifTsGhC4tg0/LZr5pNu6QBXiepHRsUK0HWNfbjOu19qS/";
const ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID6ugUFrk60lZ1a7Fl4RYLUdQM8g4YzsxHySDgZBdgbn alice@laptop";
const BOB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGf9DYTdp9KmiwMhfRbQVLPWnwABq8jLKv9LEsoFt7FO bob";

export function benchGuestConfig(): GuestConfig {
  return {
    instanceId: "ins-7k2m9xqa",
    uuid: "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b",
    instanceName: "web server 1",
    hostname: "web-1",
    osType: "linux",
    availabilityZone: "ap-guangzhou-3",
    region: "ap-guangzhou",
    hostId: "host-abcdef12",
    instanceType: "CDH_2C4G",
    imageId: "img-pmqg1cw7",
    launchIndex: 0,
    generation: 1,
    createdTime: "2024-05-06T07:08:09Z",
    nics: [
      {
        mac: "52:54:00:ab:cd:ef",
        ipv4: "10.20.30.40",
        prefixLength: 24,
        gateway: "10.20.30.1",
        vpcId: "vpc-ja82n9op",
        subnetId: "subnet-ja82n9op",
      },
    ],
    nameservers: ["10.20.0.2", "10.20.0.3"],
    ntpServers: ["ntp.example.internal"],
    publicKeys: [
      { keyId: "skey-aaaa1111", keyName: "alice", publicKey: ALICE_KEY },
      { keyId: "skey-bbbb2222", keyName: "bob", publicKey: BOB_KEY },
    ],
    passwordHash: LINUX_HASH,
    loginUser: "root",
    passwordLogin: true,
    userData: Buffer.from("#!/bin/bash\necho 'hello from user data' > /root/hello.txt\n"),
  };
}
