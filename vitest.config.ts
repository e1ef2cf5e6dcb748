import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/integration/global-setup.ts"],
          // Each file holds a lock for its whole run: an overlap fails the second file.
          setupFiles: ["test/integration/one-file-at-a-time.ts"],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          // One libvirtd serves all integration files: run them one at a time. Vitest 4
          // honours this per project (a project's maxWorkers becomes 1, and its files run
          // as a sequential group after the parallel ones); vitest 3 ignored it here.
          fileParallelism: false,
          pool: "forks",
        },
      },
    ],
  },
});
