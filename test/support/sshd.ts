/**
 * A real OpenSSH sshd for tests: its own host key, client key and sshd_config in a temp
 * dir, listening on 127.0.0.1 and a free high port, run in the foreground (-D -e) as a
 * child that stop() kills. Test helpers may use execa directly.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";

export interface TestSshd {
  host: string;
  port: number;
  username: string;
  /** The client's private key (OpenSSH format). */
  privateKey: Buffer;
  /** The host key's fingerprint as `ssh-keygen -lf` prints it after "SHA256:". */
  hostKeyFingerprint: string;
  dir: string;
  /** Everything sshd has logged so far (it logs to stderr with -e). */
  log(): string;
  /** How many times a client has logged in with its key. */
  acceptedLogins(): number;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export async function startSshd(options: { sshdPath?: string; readyTimeoutMs?: number } = {}): Promise<TestSshd> {
  const sshdPath = options.sshdPath ?? "/usr/sbin/sshd";
  const dir = await mkdtemp(join(tmpdir(), "cdh-sshd-"));
  await mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  const hostKey = join(dir, "host_ed25519");
  const clientKey = join(dir, "client_ed25519");
  await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "cdh-test-host", "-f", hostKey]);
  await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "cdh-test-client", "-f", clientKey]);
  await writeFile(join(dir, "authorized_keys"), await readFile(`${clientKey}.pub`), { mode: 0o600 });
  const fingerprintLine = (await execa("ssh-keygen", ["-l", "-E", "sha256", "-f", `${hostKey}.pub`])).stdout;
  const fingerprint = /SHA256:([A-Za-z0-9+/]+)/.exec(fingerprintLine)?.[1];
  if (!fingerprint) throw new Error(`cannot read the host key fingerprint from: ${fingerprintLine}`);

  const port = await freePort();
  const config = join(dir, "sshd_config");
  await writeFile(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
  );

  let log = "";
  const child: ResultPromise = execa(sshdPath, ["-D", "-e", "-f", config], { reject: false, buffer: false, stdin: "ignore" });
  child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString("utf8")));
  child.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString("utf8")));
  let exited = false;
  const done = child.then(() => {
    exited = true;
  });

  const deadline = Date.now() + (options.readyTimeoutMs ?? 10_000);
  while (!log.includes(`Server listening on 127.0.0.1 port ${port}`)) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      await done;
      await rm(dir, { recursive: true, force: true });
      throw new Error(`sshd did not start on port ${port}:\n${log}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  return {
    host: "127.0.0.1",
    port,
    username: userInfo().username,
    privateKey: await readFile(clientKey),
    hostKeyFingerprint: fingerprint,
    dir,
    log: () => log,
    acceptedLogins: () => log.split("\n").filter((line) => /Accepted publickey for /.test(line)).length,
    stop: async () => {
      if (!exited) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await done;
      clearTimeout(timer);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
