/**
 * A controller stub for the integration tests: answers every report with 200 and keeps it
 * (parsed), so a test can wait for the report it expects.
 */
import { createServer, type Server } from "node:http";
import { freePort } from "./agent-process.js";

export class ControllerStub<R = Record<string, unknown>> {
  readonly reports: R[] = [];
  port = 0;
  private server: Server | undefined;

  /** Listens on a free loopback port; the agent's controller_url is `url`. */
  async start(): Promise<void> {
    this.port = await freePort();
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        this.reports.push(JSON.parse(Buffer.concat(chunks).toString("utf8")) as R);
        res.end("{}");
      });
    });
    await new Promise<void>((r) => this.server!.listen(this.port, "127.0.0.1", r));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/report`;
  }

  close(): Promise<void> {
    return new Promise((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
