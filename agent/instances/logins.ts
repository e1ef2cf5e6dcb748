/**
 * Logins of instances: AssociateInstancesKeyPairs, DisassociateInstancesKeyPairs and
 * ResetInstancesPassword. The record changes at once; the guest gets the change through
 * its config drive and, when it runs, through qemu-guest-agent (or a stop and start when
 * ForceStop allows it).
 */
import { mkdir } from "node:fs/promises";
import type { Logger } from "pino";
import { GuestAgentError, type Hypervisor } from "../../drivers/libvirt/types.js";
import { DomainError } from "../core/errors.js";
import type { DataPaths } from "../paths.js";
import type { KeyPairStore } from "../logins/keypairs.js";
import { checkPassword, sha512Crypt } from "../logins/password.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { PowerControl } from "./power.js";
import type { ConfigDrives } from "./provision.js";
import type { InstanceEntry } from "./registry.js";

/** ResetInstancesPassword. */
export interface ResetPasswordRequest {
  instanceIds: string[];
  password: string;
  userName?: string;
  forceStop: boolean;
}

/** AssociateInstancesKeyPairs / DisassociateInstancesKeyPairs. */
export interface KeyBindingRequest {
  instanceIds: string[];
  keyIds: string[];
  forceStop: boolean;
}

export class LoginOperations {
  constructor(
    private readonly o: {
      ops: Operations;
      paths: DataPaths;
      keyPairs: Pick<KeyPairStore, "associate" | "disassociate" | "keysOfInstance">;
      hypervisor: Pick<Hypervisor, "guestAgent">;
      drives: Pick<ConfigDrives, "refresh">;
      power: PowerControl;
      logger: Logger;
    },
  ) {}

  /** Binds key pairs to instances (replacing earlier ones); the guests get them through their config. */
  async associateKeyPairs(req: KeyBindingRequest, ctx: RequestContext): Promise<void> {
    const entries = this.o.ops.validate(req.instanceIds, "AssociateInstancesKeyPairs");
    await this.o.keyPairs.associate(req.instanceIds, req.keyIds);
    for (const entry of entries) {
      // Binding keys hands the login to the platform: a KeepImageLogin instance stops keeping it.
      const { keepImage: _kept, ...login } = entry.record.login ?? { keyIds: [] };
      entry.record.login = { ...login, keyIds: [...req.keyIds] };
      this.applyLogin(entry, "AssociateInstancesKeyPairs", req.forceStop, ctx, { keys: true });
    }
  }

  /** Removes key pairs from instances. */
  async disassociateKeyPairs(req: KeyBindingRequest, ctx: RequestContext): Promise<void> {
    const entries = this.o.ops.validate(req.instanceIds, "DisassociateInstancesKeyPairs");
    await this.o.keyPairs.disassociate(req.instanceIds, req.keyIds);
    const removed = new Set(req.keyIds);
    for (const entry of entries) {
      entry.record.login = { ...entry.record.login, keyIds: (entry.record.login?.keyIds ?? []).filter((k) => !removed.has(k)) };
      this.applyLogin(entry, "DisassociateInstancesKeyPairs", req.forceStop, ctx, { keys: true });
    }
  }

  /**
   * Sets a new login password. A running guest whose qemu-guest-agent answers gets it
   * at once, without a reboot; a running guest without one is stopped first when
   * ForceStop allows it (the seed's rule) and started again; a stopped one gets it at
   * its next boot, from its config drive.
   */
  async resetPassword(req: ResetPasswordRequest, ctx: RequestContext): Promise<void> {
    const entries = this.o.ops.validate(req.instanceIds, "ResetInstancesPassword");
    for (const entry of entries) {
      const windows = entry.record.osType === "windows";
      checkPassword(req.password, windows ? "windows" : "linux", { field: "Password" });
      if (req.userName !== undefined && req.userName !== (windows ? "Administrator" : "root")) {
        throw new DomainError("BadValue", `UserName ${req.userName}: this host's images log in as ${windows ? "Administrator" : "root"}`);
      }
    }
    for (const entry of entries) {
      const id = entry.record.instanceId;
      if (entry.record.osType === "windows") {
        await mkdir(this.o.paths.instanceDir(id), { recursive: true, mode: 0o711 });
        await writeFileAtomic(this.o.paths.windowsPassword(id), req.password, 0o600);
      } else {
        entry.record.login = { keyIds: entry.record.login?.keyIds ?? [], passwordHash: sha512Crypt(req.password) };
      }
      this.applyLogin(entry, "ResetInstancesPassword", req.forceStop, ctx, { password: req.password });
    }
  }

  /** Applies a changed login to one instance in the background: drive, then live or by a stop/start. */
  private applyLogin(entry: InstanceEntry, action: string, forceStop: boolean, ctx: RequestContext, change: { password?: string; keys?: boolean }): void {
    const id = entry.record.instanceId;
    entry.record.configGeneration = (entry.record.configGeneration ?? 1) + 1;
    const t = this.o.ops.begin(entry, action, "UPDATING", ctx);
    this.o.ops.background(id, t, async () => {
      await this.o.ops.settle(entry, t, action, ctx, async () => {
        await this.o.drives.refresh(entry.record);
        if (!this.o.power.isOn(id)) return; // applied at the next boot from the drive
        if (await this.applyLive(id, entry, change)) return;
        if (!forceStop) {
          throw new DomainError("InstanceRunning",
            `${id} is running and its guest agent does not answer: set ForceStop to stop it, apply the change and start it again`,
          );
        }
        if (!(await this.o.power.softStop(id, t.abort.signal))) await this.o.power.hardStop(id);
        await this.o.power.powerOn(id);
      });
    });
  }

  /** Through qemu-guest-agent: true when the running guest took the change. */
  private async applyLive(id: string, entry: InstanceEntry, change: { password?: string; keys?: boolean }): Promise<boolean> {
    const hv = this.o.hypervisor;
    try {
      await hv.guestAgent(id, { execute: "guest-ping" }, 5);
      const windows = entry.record.osType === "windows";
      const user = windows ? "Administrator" : "root";
      if (change.password !== undefined) {
        const linuxHash = entry.record.login?.passwordHash;
        const secret = windows || !linuxHash ? change.password : linuxHash;
        await hv.guestAgent(id, {
          execute: "guest-set-user-password",
          arguments: { username: user, password: Buffer.from(secret).toString("base64"), crypted: !windows && Boolean(linuxHash) },
        });
      }
      if (change.keys && !windows) {
        const keys = await this.o.keyPairs.keysOfInstance(id);
        await hv.guestAgent(id, {
          execute: "guest-ssh-add-authorized-keys",
          arguments: { username: user, keys: keys.map((k) => k.publicKey), reset: true },
        });
      }
      return true;
    } catch (error) {
      if (error instanceof GuestAgentError) {
        this.o.logger.info({ instanceId: id, err: error }, "guest agent did not take the change");
        return false;
      }
      throw error;
    }
  }
}
