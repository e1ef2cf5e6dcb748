import { describe, expect, it } from "vitest";
import { imageUrlChecksum, parseImageSource } from "../../../agent/api/schemas-images.js";
import { parseImageUrl } from "../../../agent/images/source.js";
import { cvmCodeOf } from "../../../agent/api/error-map.js";

const SHA = "a".repeat(44) + "0123456789ABCDEFabcd";

describe("ImageUrl with a #sha256= checksum", () => {
  it("takes the checksum from the fragment and leaves it out of the path or the request URL", () => {
    expect(parseImageSource(`file:///srv/img/d.raw#sha256=${SHA}`)).toEqual({ kind: "file", path: "/srv/img/d.raw", sha256: SHA.toLowerCase() });
    expect(parseImageSource(`http://127.0.0.1:8080/d.qcow2#sha256=${SHA}`)).toEqual({
      kind: "http",
      href: "http://127.0.0.1:8080/d.qcow2",
      sha256: SHA.toLowerCase(),
    });
    expect(parseImageSource("file:///srv/img/d.raw")).toEqual({ kind: "file", path: "/srv/img/d.raw" });
    expect(parseImageSource("file:///srv/img/a%23b.raw")).toEqual({ kind: "file", path: "/srv/img/a#b.raw" });
  });

  it("refuses any other fragment with InvalidParameter.InvalidParameterUrlError", () => {
    expect(imageUrlChecksum("file:///x.raw#md5=abc")).toBeNull();
    expect(imageUrlChecksum(`file:///x.raw#sha256=${SHA.slice(1)}`)).toBeNull();
    expect(parseImageSource("file:///x.raw#frag")).toBeUndefined();
    let error: unknown;
    try {
      parseImageUrl("file:///x.raw#frag");
    } catch (e) {
      error = e;
    }
    expect(cvmCodeOf(error)).toBe("InvalidParameter.InvalidParameterUrlError");
  });
});
