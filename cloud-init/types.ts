/**
 * What a guest should know about itself, and the documents rendered from it.
 *
 * `GuestConfig` is built purely from the instance record (plus host settings);
 * `GuestDocuments` is rendered purely from a `GuestConfig`. The config drive and
 * every metadata tree are fed from the same `GuestDocuments`, so they never disagree.
 */

/** One NIC as the guest sees it. nics[0] is the primary NIC, `eth0` in the guest. */
export interface GuestNic {
  /** 52:54:00:xx:xx:xx, lowercase. */
  readonly mac: string;
  readonly ipv4: string;
  readonly prefixLength: number;
  readonly gateway: string;
  readonly vpcId: string;
  readonly subnetId: string;
  /** The link MTU, when the host network needs one other than the guest's default (1500). */
  readonly mtu?: number;
  /** Secondary private IPv4 addresses (same subnet and prefix as `ipv4`), in assignment order. */
  readonly secondaryIpv4s?: readonly string[];
  /** The elastic network interface this NIC is (eni-…), when it has one. */
  readonly eniId?: string;
  /**
   * The NIC's fixed device number (its slot): the guest names it `eth<deviceNumber>` and EC2's
   * `device-number` says it. Absent: its index in `nics`. Detaching one NIC renames no other.
   */
  readonly deviceNumber?: number;
  /** This NIC's security groups in priority order; absent: the instance's (`GuestConfig.securityGroups`). */
  readonly securityGroups?: readonly GuestSecurityGroup[];
}

/** A public key bound to the instance. */
export interface GuestKey {
  /** skey-xxxxxxxx */
  readonly keyId: string;
  readonly keyName: string;
  /** One OpenSSH line: "ssh-rsa AAAA... comment". */
  readonly publicKey: string;
}

export interface GuestConfig {
  /** ins-xxxxxxxx */
  readonly instanceId: string;
  /** The instance's UUID: cloud-init's instance-id, fixed for the instance's life. */
  readonly uuid: string;
  readonly instanceName: string;
  readonly hostname: string;
  readonly osType: "linux" | "windows";
  /** Placement.Zone */
  readonly availabilityZone: string;
  readonly region: string;
  readonly hostId: string;
  readonly instanceType: string;
  readonly imageId: string;
  /** Position within its RunInstances batch (0-based). */
  readonly launchIndex: number;
  /** Changes with every change the guest should apply (password, keys, hostname, network). */
  readonly generation: number;
  /** ISO 8601 UTC, seconds. */
  readonly createdTime: string;
  readonly nics: readonly GuestNic[];
  readonly nameservers: readonly string[];
  readonly ntpServers: readonly string[];
  readonly publicKeys: readonly GuestKey[];
  /** Linux: SHA-512 crypt ("$6$...") of the login user's password. Never the plain text. */
  readonly passwordHash?: string;
  /** Windows: the password in plain text, for cloudbase-init (admin_pass). */
  readonly windowsPassword?: string;
  /** The login user: "root" on Linux, "Administrator" on Windows. */
  readonly loginUser: string;
  /** False once key pairs are bound (password login is then disabled). */
  readonly passwordLogin: boolean;
  /** KeepImageLogin: no login settings at all (password, keys, ssh_pwauth, root login) go to the guest. */
  readonly keepImageLogin?: boolean;
  /** User data, decoded from the API's base64. */
  readonly userData?: Buffer;
  /**
   * The instance's security groups in priority order (the metadata trees serve them: EC2's
   * `security-groups` and per-MAC `security-group-ids`, Tencent's `instance/security-group`).
   */
  readonly securityGroups?: readonly GuestSecurityGroup[];
  /** The intranet caps, Kbit/s (Tencent's `instance/bandwidth-limit-egress|ingress`); absent: none enforced. */
  readonly bandwidthLimitKbit?: { readonly egress: number; readonly ingress: number };
}

export interface GuestSecurityGroup {
  /** sg-xxxxxxxx */
  readonly id: string;
  readonly name: string;
}

/** The documents every guest-facing channel serves; plain JSON values. */
export interface GuestDocuments {
  readonly openstack: {
    readonly metaData: Record<string, unknown>;
    readonly vendorData: Record<string, unknown>;
    readonly networkData: Record<string, unknown>;
    readonly userData?: Buffer;
  };
  readonly ec2: {
    readonly metaData: Record<string, unknown>;
    readonly userData?: Buffer;
  };
  /** The Tencent `qcloud_action/os.conf` for images without cloud-init. */
  readonly tencentOsConf: string;
  /** NoCloud (`cidata`) variant: meta-data, user-data, network-config (YAML/JSON text). */
  readonly nocloud: {
    readonly metaData: string;
    readonly userData: Buffer;
    readonly networkConfig: string;
    /** The same `#cloud-config` as the OpenStack vendor data (NoCloud reads `vendor-data` too). */
    readonly vendorData?: string;
  };
}
