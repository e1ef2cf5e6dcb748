import { describe, expect, it } from "vitest";
import { ExecError } from "../../../drivers/exec/runner.js";
import { classifyVirshStderr, translateVirshError, virshMessage } from "../../../drivers/libvirt/errors.js";
import {
  DomainNotFoundError,
  DomainStateError,
  LibvirtError,
  LibvirtUnavailableError,
} from "../../../drivers/libvirt/types.js";

const failed = (stderr: string, failure: ExecError["failure"] = "exit") =>
  new ExecError({ command: ["virsh", "x"], exitCode: failure === "exit" ? 1 : null, stdout: "", stderr, failure });

describe("classifyVirshStderr", () => {
  it.each([
    ["error: failed to get domain 'ins-x'", "not-found"],
    ["error: Domain not found: no domain with matching name 'ins-x'", "not-found"],
    ["error: Requested operation is not valid: domain is not running", "not-running"],
    ["error: Requested operation is not valid: domain is already running", "already-active"],
    ["error: operation failed: domain is already active", "already-active"],
    ["error: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory", "unavailable"],
    ["error: failed to connect to the hypervisor", "unavailable"],
    ["error: End of file while reading data: Input/output error", "unavailable"],
    ["error: Timed out during operation: cannot acquire state change lock", "invalid-state"],
    ["error: XML error: bad thing", "other"],
  ])("reads %j as %s", (stderr, kind) => {
    expect(classifyVirshStderr(stderr)).toBe(kind);
  });
});

describe("translateVirshError", () => {
  it("makes DomainNotFoundError for the domain, keeping the ExecError as cause", () => {
    const cause = failed("error: failed to get domain 'ins-x'\n");
    const error = translateVirshError(cause, "start ins-x", "ins-x");
    expect(error).toBeInstanceOf(DomainNotFoundError);
    expect(error.cause).toBe(cause);
  });

  it("maps state and connection failures to their types", () => {
    expect(translateVirshError(failed("error: domain is not running"), "destroy d", "d")).toBeInstanceOf(DomainStateError);
    expect(translateVirshError(failed("error: failed to connect to the hypervisor"), "list")).toBeInstanceOf(LibvirtUnavailableError);
    expect(translateVirshError(failed("", "timeout"), "list")).toBeInstanceOf(LibvirtUnavailableError);
    expect(translateVirshError(failed("", "spawn"), "list")).toBeInstanceOf(LibvirtUnavailableError);
  });

  it("keeps anything else a LibvirtError whose message says what virsh said", () => {
    const error = translateVirshError(failed("error: Failed to define domain from f.xml\nerror: XML error: bad\n"), "define d", "d");
    expect(error.constructor).toBe(LibvirtError);
    expect(error.message).toBe("virsh define d: Failed to define domain from f.xml; XML error: bad");
  });

  it("strips the error: prefixes and blank lines", () => {
    expect(virshMessage("\nerror: a\n\nerror: b\n")).toBe("a; b");
  });
});
