/**
 * OsType and OsVersion as ImportImage and InstanceAttachISO take them: an OsType
 * from the documented families (agent/os-family.ts, README "Images: OsType and
 * OsVersion"), else InvalidImageOsType.Unsupported; an OsVersion that is a release
 * name or number, else InvalidImageOsVersion.Unsupported.
 */
import { z } from "zod";
import { OS_TYPES, osFamilyOf, osVersionOk } from "../os-family.js";
import { fail } from "./schemas.js";

const KNOWN = [...OS_TYPES.linux, ...OS_TYPES.windows].join(", ");

export const osTypeField = z.string().superRefine((v, ctx) => {
  if (osFamilyOf(v) === undefined) {
    const shown = [...v].length > 64 ? `${[...v].slice(0, 64).join("")}…` : v;
    fail(ctx, "InvalidImageOsType.Unsupported", `${JSON.stringify(shown)} is not a supported OS type; use one of: ${KNOWN}`);
  }
});

export const osVersionField = z.string().superRefine((v, ctx) => {
  if (!osVersionOk(v)) {
    fail(
      ctx,
      "InvalidImageOsVersion.Unsupported",
      "must be a release name or number: 1-32 letters, digits, '.', '_', '-' or blanks, starting with a letter or digit (e.g. 7.2.1, 22.04, 2012 R2)",
    );
  }
});
