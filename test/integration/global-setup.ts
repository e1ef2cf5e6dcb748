/**
 * Integration tests run against a real libvirtd started inside network namespace
 * `cdhtest` (its bridges and guest traffic live only there), the tiny guest images the
 * project builds from Debian packages, and the compiled agent.
 */
import { execa } from "execa";
import { resolve } from "node:path";
import type { TestProject } from "vitest/node";

const root = resolve(import.meta.dirname, "../..");

export default async function setup(project: TestProject): Promise<void> {
  await execa("bash", [resolve(root, "scripts/libvirtd-up.sh"), "--netns", "cdhtest"], { stdio: "inherit" });
  await execa("bash", [resolve(root, "scripts/build-tiny-image.sh")], { stdio: "inherit" });
  // This libvirtd serves the tests only: clear instances an interrupted earlier run left behind.
  const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });
  for (const name of (await virsh("list", "--all", "--name")).stdout.split("\n").map((s) => s.trim())) {
    if (!/^ins-[a-z0-9]{8}$/.test(name)) continue;
    await virsh("destroy", name);
    await virsh("undefine", name, "--nvram");
  }
  await execa("npx", ["tsc", "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" });
  project.provide("repoRoot", root);
}

declare module "vitest" {
  export interface ProvidedContext {
    repoRoot: string;
  }
}
