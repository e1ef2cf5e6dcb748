/**
 * Integration tests run inside the test host `cdhtest` (scripts/in-testns.sh): its own
 * network and mount namespaces with a libvirtd of its own (its bridges, guest traffic and
 * libvirt definitions live only there; a libvirtd of the machine itself is never touched),
 * the tiny guest images the project builds from Debian packages, and the compiled agent.
 */
import { execa } from "execa";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { TestProject } from "vitest/node";
import { TEST_DATA_ROOT } from "../support/agent-process.js";
import { alive } from "../support/file-lock.js";

const root = resolve(import.meta.dirname, "../..");

/** One empty file per test run in progress, named by its process ID. */
const RUNS_DIR = "/run/cdh-agent-test-runs";


export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // A no-op when the test host's libvirtd answers (scripts/in-testns.sh brought it up).
  await execa("bash", [resolve(root, "scripts/libvirtd-up.sh"), "--host", process.env.CDH_TEST_HOST ?? "cdhtest"], { stdio: "inherit" });
  await execa("bash", [resolve(root, "scripts/build-tiny-image.sh")], { stdio: "inherit" });
  // The test host's libvirtd serves the tests only: clear instances an interrupted earlier run left
  // behind, unless another test run is going on (its instances are alive).
  const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });
  await mkdir(RUNS_DIR, { recursive: true });
  const others = (await readdir(RUNS_DIR)).map(Number).filter((pid) => pid !== process.pid && alive(pid));
  await writeFile(`${RUNS_DIR}/${process.pid}`, "");
  if (others.length === 0) {
    for (const name of (await virsh("list", "--all", "--name")).stdout.split("\n").map((s) => s.trim())) {
      if (!/^ins-[a-z0-9]{8}$/.test(name)) continue;
      await virsh("destroy", name);
      await virsh("undefine", name, "--nvram");
    }
    // The agents' data directories of earlier runs (kept after a run for its logs): they
    // hold image caches and disks, and the pools' capacity counts the filesystem's free space.
    await rm(TEST_DATA_ROOT, { recursive: true, force: true });
  }
  await mkdir(TEST_DATA_ROOT, { recursive: true, mode: 0o755 });
  // The agent runs from dist/. A development run (scripts/dev-it.sh) goes on when other
  // files of the tree do not type-check yet: tsc still emits; CI type-checks first.
  const build = await execa("npx", ["tsc", "-p", "tsconfig.json"], { cwd: root, stdio: "inherit", reject: false });
  if (build.exitCode !== 0 && process.env.CDH_DEV_IGNORE_TSC !== "1") throw new Error("tsc failed: the agent could not be built");
  project.provide("repoRoot", root);
  return async () => {
    await rm(`${RUNS_DIR}/${process.pid}`, { force: true });
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    repoRoot: string;
  }
}
