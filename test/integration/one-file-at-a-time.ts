/**
 * Setup file of every integration file (vitest.config.ts): the file holds a lock for this
 * run of vitest from its first line to its last hook, so if vitest ever ran two
 * integration files at once (they share one libvirtd and its capacity), the second fails
 * at its start, naming the first.
 */
import { basename } from "node:path";
import { afterAll, expect } from "vitest";
import { takeFileLock } from "../support/file-lock.js";

// The workers are forked by the run's vitest process: its ID names the run, so two runs
// (each with its own agents) do not trip over each other's lock.
const lock = takeFileLock(`/tmp/cdh-it-file-${process.ppid}.lock`, basename(expect.getState().testPath ?? "an integration file"));
afterAll(() => lock.release());
