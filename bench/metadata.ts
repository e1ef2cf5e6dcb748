/**
 * (d) The metadata endpoint against nginx serving the same documents as static files.
 *
 * Ours: createMetadataServer in this process (rate limit off), every caller on
 * 127.0.0.1 resolved to the one fixture guest. The baseline: nginx (one worker, its
 * own minimal config in a temp directory, `daemon off`, a child of this process)
 * serving every leaf of the same site, written from the same GuestDocuments. Load:
 * wrk, one thread, 64 keep-alive connections, a round-robin mix of paths; the
 * servers are measured in alternating rounds after a warm-up, and the median round
 * of each is reported.
 */
import { execa, type ResultPromise } from "execa";
import { chmod, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import pino from "pino";
import { renderGuestDocuments } from "../cloud-init/documents.js";
import { createMetadataServer, type GuestView } from "../agent/metadata/server.js";
import { buildSite } from "../agent/metadata/tree.js";
import { freePort } from "./agent.js";
import { benchGuestConfig } from "./fixture.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

export const MIX = ["/latest/meta-data/instance-id", "/openstack/latest/meta_data.json", "/latest/meta-data/local-ipv4"] as const;

export interface MetadataOptions {
  workDir: string;
  rounds: number;
  seconds: number;
  connections: number;
  tracker: Tracker;
  log: (line: string) => void;
}

interface WrkResult {
  requests: number;
  durationUs: number;
  p50Us: number;
  p99Us: number;
  errors: number;
  non2xx: number;
}

export async function benchMetadata(o: MetadataOptions): Promise<Row[]> {
  const config = benchGuestConfig();
  const docs = renderGuestDocuments(config);
  const view: GuestView = { config, docs, postPassword: () => "conflict" };

  // Ours.
  const server = createMetadataServer({
    listen: [{ host: "127.0.0.1", port: 0 }],
    resolve: (local) => (local === "127.0.0.1" ? view : undefined),
    logger: pino({ level: "silent" }),
    rateLimit: false,
  });
  await server.listen();
  o.tracker.stoppers.set("metadata server", () => server.close());
  const oursPort = server.addresses()[0]!.port;

  // For reference: the plainest node:http server answering the same bytes from a Map,
  // to tell the cost of Node's HTTP stack from the metadata server's own.
  const site = buildSite(config, docs);
  const plain = createServer({ keepAlive: true, noDelay: true }, (req, res) => {
    const r = site.get(req.url ?? "");
    if (!r) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, r.headers);
    res.end(r.body);
  });
  await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
  o.tracker.stoppers.set("plain server", () => closeServer(plain));
  const plainPort = (plain.address() as AddressInfo).port;

  // nginx, on the same documents.
  const nginxPort = await freePort();
  const nginxDir = join(o.workDir, "nginx");
  const www = join(nginxDir, "www");
  await writeSite(www, site);
  const conf = join(nginxDir, "nginx.conf");
  await writeFile(conf, nginxConf({ dir: nginxDir, www, port: nginxPort }));
  const nginx = execa("nginx", ["-e", join(nginxDir, "error.log"), "-p", nginxDir, "-c", conf], { reject: false, stdin: "ignore" });
  o.tracker.stoppers.set("nginx", () => stopChild(nginx));
  await waitHttp(nginxPort, MIX[0], nginx, join(nginxDir, "error.log"));

  // Both must answer every path of the mix with the same body.
  for (const path of MIX) {
    const [a, b] = await Promise.all([get(oursPort, path), get(nginxPort, path)]);
    if (a.status !== 200 || b.status !== 200 || !a.body.equals(b.body)) {
      throw new Error(`${path}: the metadata server answered ${a.status} (${a.body.length} bytes), nginx ${b.status} (${b.body.length} bytes)`);
    }
  }

  const script = join(o.workDir, "mix.lua");
  await writeFile(script, wrkScript(MIX));
  const wrk = (port: number, seconds: number) => runWrk({ port, seconds, connections: o.connections, script });

  await wrk(oursPort, 2);
  await wrk(nginxPort, 2);
  await wrk(plainPort, 2);
  const ours: WrkResult[] = [];
  const base: WrkResult[] = [];
  const ref: WrkResult[] = [];
  const show = (r: WrkResult) => `${rps(r).toFixed(0)} req/s p99 ${(r.p99Us / 1000).toFixed(2)} ms`;
  for (let i = 0; i < o.rounds; i++) {
    ours.push(await wrk(oursPort, o.seconds));
    base.push(await wrk(nginxPort, o.seconds));
    ref.push(await wrk(plainPort, o.seconds));
    o.log(`  (d) round ${i + 1}/${o.rounds}: ours ${show(ours[i]!)}; nginx ${show(base[i]!)}; plain node:http ${show(ref[i]!)}`);
  }
  for (const r of [...ours, ...base, ...ref]) {
    if (r.errors || r.non2xx) throw new Error(`wrk saw ${r.errors} socket errors and ${r.non2xx} non-2xx answers`);
  }

  await server.close();
  o.tracker.stoppers.delete("metadata server");
  await closeServer(plain);
  o.tracker.stoppers.delete("plain server");
  await stopChild(nginx);
  o.tracker.stoppers.delete("nginx");

  const oursP99 = median(ours.map((r) => r.p99Us / 1000));
  return [
    ratioRow({
      part: "(d)",
      what: `metadata req/s, ${o.connections} keep-alive conns, ${MIX.length}-path mix (median of ${o.rounds} × ${o.seconds} s)`,
      ours: median(ours.map(rps)),
      baseline: median(base.map(rps)),
      unit: "req/s",
      min: 0.8,
    }),
    {
      part: "(d)",
      what: "metadata p99 latency (same runs)",
      ours: oursP99,
      baseline: median(base.map((r) => r.p99Us / 1000)),
      unit: "ms",
      target: "< 5 ms",
      met: oursP99 < 5,
    },
    {
      part: "(d)",
      what: "  plain node:http on the same bytes, for reference (vs nginx)",
      ours: median(ref.map(rps)),
      baseline: median(base.map(rps)),
      unit: "req/s",
      target: "—",
      met: undefined,
    },
    {
      part: "(d)",
      what: "  plain node:http p99, for reference (vs nginx)",
      ours: median(ref.map((r) => r.p99Us / 1000)),
      baseline: median(base.map((r) => r.p99Us / 1000)),
      unit: "ms",
      target: "—",
      met: undefined,
    },
  ];
}

const rps = (r: WrkResult) => r.requests / (r.durationUs / 1e6);

/** Every leaf of the site as a file (folders are directories; their listings are not needed). */
async function writeSite(www: string, site: ReadonlyMap<string, { body: Buffer }>): Promise<void> {
  const paths = [...site.keys()];
  const folders = new Set(paths.flatMap((p) => p.split("/").slice(1, -1).map((_, i, parts) => "/" + parts.slice(0, i + 1).join("/"))));
  await mkdir(www, { recursive: true });
  for (const [path, resource] of site) {
    if (path.endsWith("/") || folders.has(path)) continue;
    const file = join(www, ...path.split("/").filter(Boolean));
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, resource.body);
  }
  // nginx's workers run as nobody.
  await chmodTree(dirname(www));
}

async function chmodTree(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await chmodTree(path);
    else await chmod(path, 0o644);
  }
}

function nginxConf(o: { dir: string; www: string; port: number }): string {
  return `# cdh-agent bench: static copy of one guest's metadata site
daemon off;
worker_processes 1;
pid ${o.dir}/nginx.pid;
error_log ${o.dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/plain;
  types { application/json json; }
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  client_body_temp_path ${o.dir}/body;
  proxy_temp_path ${o.dir}/proxy;
  fastcgi_temp_path ${o.dir}/fastcgi;
  uwsgi_temp_path ${o.dir}/uwsgi;
  scgi_temp_path ${o.dir}/scgi;
  server {
    listen 127.0.0.1:${o.port};
    root ${o.www};
  }
}
`;
}

function wrkScript(paths: readonly string[]): string {
  return `-- cdh-agent bench: round-robin over a mix of metadata paths
local paths = { ${paths.map((p) => JSON.stringify(p)).join(", ")} }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH-WRK %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
`;
}

async function runWrk(o: { port: number; seconds: number; connections: number; script: string }): Promise<WrkResult> {
  const r = await execa(
    "wrk",
    ["-t1", `-c${o.connections}`, `-d${o.seconds}s`, "--timeout", "5s", "-s", o.script, `http://127.0.0.1:${o.port}/`],
    { reject: false, stdin: "ignore", timeout: (o.seconds + 30) * 1000 },
  );
  const m = /BENCH-WRK (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(String(r.stdout));
  if (!m) throw new Error(`wrk printed no result (exit ${r.exitCode}): ${String(r.stderr || r.stdout).slice(0, 500)}`);
  const n = m.slice(1).map(Number);
  return { requests: n[0]!, durationUs: n[1]!, p50Us: n[2]!, p99Us: n[3]!, errors: n[4]!, non2xx: n[5]! };
}

function get(port: number, path: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

async function waitHttp(port: number, path: string, child: ResultPromise, errorLog: string): Promise<void> {
  let exited = false;
  void child.then(() => (exited = true));
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (exited) break;
    const ok = await get(port, path).then(
      () => true,
      () => false,
    );
    if (ok) return;
    await sleep(50);
  }
  const log = await readFile(errorLog, "utf8").catch(() => "");
  throw new Error(`nginx did not answer on port ${port}: ${log.trim().split("\n").slice(-3).join(" | ")}`);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

async function stopChild(child: ResultPromise): Promise<void> {
  if (child.exitCode !== null && child.exitCode !== undefined) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await child;
  clearTimeout(timer);
}
