/**
 * The console page on the API listener: GET /console/vnc.html (+ vnc.js, vnc.css from
 * page-assets.ts) and noVNC's ES modules under /console/novnc/ straight from the installed
 * `@novnc/novnc` package (core/ and vendor/, .js files only), no bundler: browsers load them
 * as modules. The page is open to anyone who can reach the API (it holds no secret); what it
 * opens needs a one-time token.
 *
 * Every answer forbids framing (a console inside another site's frame could be clicked for the
 * owner), sends no Referer (the page's URL carries the token) and allows scripts and
 * connections to this origin only (CSP). Nothing is logged with its URL.
 */
import { readFileSync, realpathSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { dirname, join, normalize, sep } from "node:path";
import { PAGE_CSS, PAGE_HTML, PAGE_JS } from "./page-assets.js";

const PREFIX = "/console/";

const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "X-Frame-Options": "DENY",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "Cross-Origin-Opener-Policy": "same-origin",
});

/** The installed noVNC package's folder (its `exports` name core/rfb.js only). */
export function noVncRoot(): string {
  const entry = createRequire(import.meta.url).resolve("@novnc/novnc");
  return realpathSync(dirname(dirname(entry)));
}

export interface ConsolePage {
  /** Answers GET/HEAD under /console/; false for any other path. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
}

export function consolePage(options: { noVncRoot?: string } = {}): ConsolePage {
  const root = options.noVncRoot ?? noVncRoot();
  const own = new Map<string, { type: string; body: Buffer }>([
    ["vnc.html", { type: "text/html; charset=utf-8", body: Buffer.from(PAGE_HTML) }],
    ["vnc.js", { type: "text/javascript; charset=utf-8", body: Buffer.from(PAGE_JS) }],
    ["vnc.css", { type: "text/css; charset=utf-8", body: Buffer.from(PAGE_CSS) }],
  ]);
  /** noVNC files read once, on first use. */
  const cache = new Map<string, Buffer | null>();

  function noVncFile(rel: string): Buffer | null {
    if (cache.has(rel)) return cache.get(rel)!;
    let body: Buffer | null = null;
    // core/… or vendor/…, a .js file, no "..": the normalized path must stay inside the package.
    if (/^(core|vendor)\/[A-Za-z0-9_./-]+\.js$/.test(rel) && !rel.split("/").includes("..")) {
      const file = normalize(join(root, rel));
      if (file.startsWith(root + sep)) {
        try {
          body = readFileSync(file);
        } catch {
          body = null;
        }
      }
    }
    if (cache.size < 512) cache.set(rel, body);
    return body;
  }

  return {
    handle(req, res) {
      const target = req.url ?? "/";
      const q = target.indexOf("?");
      const path = q < 0 ? target : target.slice(0, q);
      if (!path.startsWith(PREFIX)) return false;
      const name = path.slice(PREFIX.length);
      let file: { type: string; body: Buffer; cache: string } | undefined;
      const mine = own.get(name);
      if (mine) file = { ...mine, cache: "no-store" };
      else if (name.startsWith("novnc/")) {
        const body = noVncFile(name.slice("novnc/".length));
        if (body) file = { type: "text/javascript; charset=utf-8", body, cache: "public, max-age=3600" };
      }
      if (!file) {
        const body = "not found\n";
        res.writeHead(404, { ...SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body) });
        res.end(req.method === "HEAD" ? undefined : body);
        return true;
      }
      res.writeHead(200, { ...SECURITY_HEADERS, "Content-Type": file.type, "Content-Length": file.body.length, "Cache-Control": file.cache });
      res.end(req.method === "HEAD" ? undefined : file.body);
      return true;
    },
  };
}
