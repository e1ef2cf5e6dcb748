import { describe, expect, it } from "vitest";
import { ALLOWED_FROM, deriveState, newId, newMac, POWER_TO_STATE, type InstanceState } from "../../../agent/model.js";
import { codeOfDomainError } from "../../../agent/api/error-map.js";
import { DomainError } from "../../../agent/core/errors.js";
import { isKnownCode } from "../../../agent/errors.js";

describe("instance state", () => {
  it("derives RUNNING and STOPPED from libvirt's state when no operation runs", () => {
    expect(deriveState({ launchFailed: false, transition: undefined, power: "running" })).toBe("RUNNING");
    expect(deriveState({ launchFailed: false, transition: undefined, power: "paused" })).toBe("RUNNING");
    expect(deriveState({ launchFailed: false, transition: undefined, power: "shut off" })).toBe("STOPPED");
    expect(deriveState({ launchFailed: false, transition: undefined, power: "crashed" })).toBe("STOPPED");
  });

  it("never calls a machine it cannot see STOPPED", () => {
    expect(deriveState({ launchFailed: false, transition: undefined, power: "unknown" })).toBe("UNKNOWN");
    expect(deriveState({ launchFailed: false, transition: undefined, power: "absent" })).toBe("UNKNOWN");
    expect(deriveState({ launchFailed: false, transition: undefined, power: "no state" })).toBe("UNKNOWN");
  });

  it("shows the operation in progress over libvirt's state, and LAUNCH_FAILED over everything", () => {
    expect(deriveState({ launchFailed: false, transition: "STOPPING", power: "running" })).toBe("STOPPING");
    expect(deriveState({ launchFailed: false, transition: "PENDING", power: "absent" })).toBe("PENDING");
    expect(deriveState({ launchFailed: true, transition: undefined, power: "absent" })).toBe("LAUNCH_FAILED");
  });

  it("maps every libvirt state", () => {
    for (const p of ["running", "blocked", "paused", "in shutdown", "shut off", "crashed", "pmsuspended", "no state"] as const) {
      expect(POWER_TO_STATE[p]).toBeDefined();
    }
  });

  it("allows start only from STOPPED and stop and reboot only from RUNNING, as the seed says", () => {
    expect([...ALLOWED_FROM.StartInstances]).toEqual(["STOPPED"]);
    expect([...ALLOWED_FROM.StopInstances]).toEqual(["RUNNING"]);
    expect([...ALLOWED_FROM.RebootInstances]).toEqual(["RUNNING"]);
  });

  it("accepts a hard stop during a soft stop, a start or a reboot, but not when stopped or pending", () => {
    for (const s of ["RUNNING", "STOPPING", "STARTING", "REBOOTING"] as InstanceState[]) expect(ALLOWED_FROM.StopInstancesHard.has(s)).toBe(true);
    for (const s of ["STOPPED", "PENDING", "TERMINATING", "LAUNCH_FAILED"] as InstanceState[]) expect(ALLOWED_FROM.StopInstancesHard.has(s)).toBe(false);
    expect(ALLOWED_FROM.TerminateInstances.has("TERMINATING")).toBe(false);
    expect(ALLOWED_FROM.TerminateInstances.has("PENDING")).toBe(false);
  });

  it("gives every state a catalogued CVM error code (the API edge's error map)", () => {
    const states: InstanceState[] = ["PENDING", "LAUNCH_FAILED", "RUNNING", "STOPPED", "STARTING", "STOPPING", "REBOOTING", "SHUTDOWN", "TERMINATING", "UNKNOWN"];
    const code = (state: InstanceState) => codeOfDomainError(new DomainError("InstanceState", "", { state }));
    for (const s of states) expect(isKnownCode(code(s)), code(s)).toBe(true);
    expect(code("STOPPED")).toBe("UnsupportedOperation.InstanceStateStopped");
  });
});

describe("identifiers", () => {
  it("makes CVM-shaped IDs", () => {
    for (let i = 0; i < 200; i++) expect(newId("ins")).toMatch(/^ins-[a-z0-9]{8}$/);
  });

  it("makes MACs in 52:54:00 that avoid the taken ones", () => {
    const taken = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const mac = newMac(taken);
      expect(mac).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
      expect(taken.has(mac)).toBe(false);
      taken.add(mac);
    }
  });
});
