/** GuestConfigs shared by the cloud-init unit tests and the config drive integration test. */
import type { GuestConfig } from "../../../cloud-init/types.js";

/** The plain text behind LINUX_HASH (`openssl passwd -6 -salt Xy7pQ2rT 'Plain-Pass-123'`). */
export const LINUX_PLAIN_PASSWORD = "Plain-Pass-123";
export const LINUX_HASH = "$6$Xy7pQ2rT$F46Tc4C6uBI5iHGeeEWE8GyiXHqPxH9G0q.6FRzlDifTsGhC4tg0/LZr5pNu6QBXiepHRsUK0HWNfbjOu19qS/";
export const WINDOWS_PASSWORD = "Win-Pa$$w0rd-'quoted'";

export const ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID6ugUFrk60lZ1a7Fl4RYLUdQM8g4YzsxHySDgZBdgbn alice@laptop";
export const BOB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGf9DYTdp9KmiwMhfRbQVLPWnwABq8jLKv9LEsoFt7FO bob";

export const USER_DATA = Buffer.from("#!/bin/bash\necho 'hello from user data' > /root/hello.txt\n");

export function linuxConfig(overrides: Partial<GuestConfig> = {}): GuestConfig {
  return {
    instanceId: "ins-7k2m9xqa",
    uuid: "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b",
    instanceName: "web server 1",
    hostname: "web-1",
    osType: "linux",
    availabilityZone: "ap-guangzhou-3",
    region: "ap-guangzhou",
    hostId: "host-abcdef12",
    instanceType: "S2.MEDIUM4",
    imageId: "img-pmqg1cw7",
    launchIndex: 1,
    generation: 3,
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
    userData: USER_DATA,
    ...overrides,
  };
}

export function windowsConfig(overrides: Partial<GuestConfig> = {}): GuestConfig {
  return linuxConfig({
    instanceId: "ins-win00001",
    uuid: "9a8b7c6d-1111-4222-8333-444455556666",
    instanceName: "win",
    hostname: "win-1",
    osType: "windows",
    publicKeys: [],
    passwordHash: undefined,
    windowsPassword: WINDOWS_PASSWORD,
    loginUser: "Administrator",
    userData: Buffer.from("<powershell>\"Hello Cloud.\" | Out-File C:\\cloud.txt</powershell>"),
    ...overrides,
  });
}
