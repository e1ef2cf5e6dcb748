/**
 * A tiny guest's serial console as a shell: the guest (scripts/build-tiny-image.sh) runs
 * every line that is not `cdh-net …` in `sh -c` with its output on the console, one line
 * at a time. The monitor's tests use it to make load on request: a busy loop (CPU), dd on
 * the system disk past the image's 64 MiB (disk), pings (NIC).
 *
 * The serial port (test/support/serial-link.ts) is read for as long as it is open. Commands
 * go in as typed: only the tests' own fixed strings, never anything from outside.
 */
import { SerialLink } from "./serial-link.js";

export class GuestConsole {
  readonly instanceId: string;
  private readonly link: SerialLink;
  private text = "";
  private closed = false;
  private seq = 0;

  private constructor(instanceId: string, link: SerialLink) {
    this.instanceId = instanceId;
    this.link = link;
    this.link.onData((chunk) => {
      // Keep the tail only: the tests look for lines they asked for.
      this.text = (this.text + chunk).slice(-65_536);
    });
    this.link.onClose(() => this.close());
  }

  /** Opens the running domain's serial port and waits until the guest's shell answers. */
  static async open(instanceId: string, timeoutMs = 30_000): Promise<GuestConsole> {
    const c = new GuestConsole(instanceId, await SerialLink.open(instanceId));
    try {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          await c.run("true", 3_000);
          return c;
        } catch (err) {
          if (Date.now() > deadline) throw err;
        }
      }
    } catch (err) {
      c.close();
      throw err;
    }
  }

  /**
   * Runs `command` in the guest's sh and waits for it to end (a command ending in `&` ends
   * at once, leaving its job running); returns what it printed.
   */
  async run(command: string, timeoutMs = 15_000): Promise<string> {
    if (this.closed) throw new Error(`${this.instanceId}: its console is closed`);
    const tag = `CDH-CON-${process.pid}-${++this.seq}`;
    // `a &; b` is a syntax error: a command ending in & is followed by the echo directly.
    const line = /&\s*$/.test(command) ? `${command} echo ${tag}-END` : `${command}; echo ${tag}-END`;
    this.link.write(`\n${line}\n`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Tags are unique: the command's output is what came before its tag.
      const at = this.text.indexOf(`${tag}-END`);
      if (at >= 0) return this.text.slice(Math.max(0, at - 4096), at);
      if (Date.now() > deadline) throw new Error(`${this.instanceId}: no end of ${JSON.stringify(command)} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.link.close();
  }
}
