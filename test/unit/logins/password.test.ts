import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { ApiError } from "../../../agent/errors.js";
import { DomainError } from "../../../agent/core/errors.js";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { checkPassword, sha512Crypt, verifySha512Crypt, type OsType } from "../../../agent/logins/password.js";

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
  } catch (error) {
    // The code the API answers with (the edge's error map).
    if (error instanceof DomainError || error instanceof ApiError) return cvmCodeOf(error);
    throw error;
  }
  return undefined;
}

function messageOf(fn: () => void): string {
  try {
    fn();
  } catch (error) {
    return (error as Error).message;
  }
  return "";
}

describe("checkPassword", () => {
  const accepted: Array<[OsType, string]> = [
    ["linux", "abcdefg1"], // 8 characters, two classes
    ["linux", "Abcdefghij1234567890!@#$%^&*()"], // 30 characters
    ["windows", "Abcdefghijk1"], // 12 characters, three classes
    ["windows", "abcdefghij1!"], // lower, digit, special
    ["windows", "Zz9(Zz9)Zz9[Zz9]Zz9{Zz9}Zz9<>"], // 30 characters
  ];

  for (const [os, pw] of accepted) {
    it(`accepts ${JSON.stringify(pw)} for ${os}`, () => {
      expect(() => checkPassword(pw, os)).not.toThrow();
    });
  }

  it("accepts every listed special character on Linux", () => {
    const specials = "()`~!@#$%^&*-+=_|{}[]:;'<>,.?/\\";
    for (const ch of specials) expect(() => checkPassword(`abcdefg${ch}`, "linux")).not.toThrow();
  });

  const refused: Array<[OsType, string, string]> = [
    ["linux", "abcdef1", "7 characters is too short for Linux"],
    ["linux", "Abcdefghij1234567890!@#$%^&*()x", "31 characters is too long"],
    ["linux", "abcdefghij", "one class is not enough for Linux"],
    ["linux", "/abcdefg1", "a leading slash is refused"],
    ["linux", "abcd efg1", "a space is not an allowed character"],
    ["linux", 'abcdefg1"', "a double quote is not an allowed character"],
    ["linux", "pässwörd1", "non-ASCII letters are not allowed"],
    ["linux", "", "an empty password is refused"],
    ["windows", "Abcdefghij1", "11 characters is too short for Windows"],
    ["windows", "abcdefghij12", "two classes are not enough for Windows"],
    ["windows", "Administrator1!", "a Windows password may not contain the user name"],
    ["windows", "xxADMINISTRATORx1!", "the user name check ignores case"],
  ];
  for (const [os, pw, why] of refused) {
    it(`refuses ${JSON.stringify(pw)} for ${os}: ${why}`, () => {
      expect(codeOf(() => checkPassword(pw, os))).toBe("InvalidPassword");
    });
  }

  it("names LoginSettings.Password in its message unless told another field", () => {
    expect(messageOf(() => checkPassword("short", "linux"))).toContain("`LoginSettings.Password`");
    expect(messageOf(() => checkPassword("short", "linux", { field: "Password" }))).toContain("`Password`");
  });

  it("checks a Windows password against the given user name instead of Administrator", () => {
    expect(() => checkPassword("Administrator1!", "windows", { userName: "ops" })).not.toThrow();
    expect(codeOf(() => checkPassword("MyOpsPassword1", "windows", { userName: "ops" }))).toBe("InvalidPassword");
  });
});

describe("sha512Crypt", () => {
  // The SHA-512 test vectors published in Ulrich Drepper's specification.
  const specVectors: Array<[string, string, string]> = [
    [
      "$6$saltstring",
      "Hello world!",
      "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ],
    [
      "$6$rounds=10000$saltstringsaltstring",
      "Hello world!",
      "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ],
    [
      "$6$rounds=5000$toolongsaltstring",
      "This is just a test",
      "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
    ],
    [
      "$6$rounds=1400$anotherlongsaltstring",
      "a very much longer text to encrypt.  This one even stretches over morethan one line.",
      "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ],
    [
      "$6$rounds=77777$short",
      "we have a short salt string but not a short password",
      "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0",
    ],
    [
      "$6$rounds=123456$asaltof16chars..",
      "a short string",
      "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1",
    ],
    [
      "$6$rounds=10$roundstoolow",
      "the minimum number is still observed",
      "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
    ],
  ];
  for (const [setting, password, expected] of specVectors) {
    it(`matches the specification's vector for setting ${setting}`, () => {
      expect(sha512Crypt(password, setting)).toBe(expected);
    });
  }

  it("takes the salt and rounds as separate arguments the same way as a setting", () => {
    expect(sha512Crypt("Hello world!", "saltstringsaltstring", 10000)).toBe(specVectors[1]![2]);
    expect(sha512Crypt("the minimum number is still observed", "roundstoolow", 10)).toBe(specVectors[6]![2]);
  });

  it("writes rounds=5000 only when rounds were asked for", () => {
    expect(sha512Crypt("pw", "abc")).toMatch(/^\$6\$abc\$[./0-9A-Za-z]{86}$/);
    expect(sha512Crypt("pw", "abc", 5000)).toMatch(/^\$6\$rounds=5000\$abc\$[./0-9A-Za-z]{86}$/);
  });

  it("draws a fresh 16-character salt when none is given", () => {
    const a = sha512Crypt("same password");
    const b = sha512Crypt("same password");
    expect(a).toMatch(/^\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}$/);
    expect(a).not.toBe(b);
    expect(verifySha512Crypt("same password", a)).toBe(true);
    expect(verifySha512Crypt("same password", b)).toBe(true);
  });

  it("refuses a salt containing a dollar sign, colon or newline", () => {
    expect(() => sha512Crypt("pw", "ab$c")).toThrow(RangeError);
    expect(() => sha512Crypt("pw", "ab:c")).toThrow(RangeError);
    expect(() => sha512Crypt("pw", "ab\nc")).toThrow(RangeError);
  });
});

describe("verifySha512Crypt", () => {
  it("accepts the right password and refuses a wrong one", () => {
    const hash = sha512Crypt("Corr3ct!horse", "0123456789abcdef", 2000);
    expect(verifySha512Crypt("Corr3ct!horse", hash)).toBe(true);
    expect(verifySha512Crypt("corr3ct!horse", hash)).toBe(false);
    expect(verifySha512Crypt("Corr3ct!horse ", hash)).toBe(false);
  });

  it("returns false for hashes that are not $6$ hashes instead of throwing", () => {
    for (const bad of ["", "*", "!", "$1$abc$def", "$6$abc", "$6$abc$tooshort", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF1ZkXhl/"]) {
      expect(verifySha512Crypt("Hello world!", bad)).toBe(false);
    }
  });
});

// --- against the system's glibc crypt(3) -----------------------------------

function pythonCryptAvailable(): boolean {
  try {
    execFileSync("python3", ["-W", "ignore", "-c", "import crypt"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function opensslAvailable(): boolean {
  try {
    return execFileSync("openssl", ["passwd", "-6", "-salt", "x", "y"], { encoding: "utf8" }).startsWith("$6$x$");
  } catch {
    return false;
  }
}

const glibcCases: Array<{ password: string; setting: string }> = [
  { password: "Passw0rd!", setting: "$6$abcdefgh" },
  { password: "pässwörd密码✓", setting: "$6$unicodeSalt" },
  { password: "🔐emoji and spaces  ", setting: "$6$e" },
  { password: "x".repeat(63), setting: "$6$len63" },
  { password: "y".repeat(64), setting: "$6$len64" },
  { password: "z".repeat(65), setting: "$6$len65" },
  { password: "long-".repeat(60), setting: "$6$0123456789ABCDEF" },
  { password: "", setting: "$6$empty" },
  { password: "a", setting: "$6$saltlongerthansixteen" },
  { password: "rounds", setting: "$6$rounds=1000$r1000" },
  { password: "rounds", setting: "$6$rounds=5000$r5000" },
  { password: "rounds", setting: "$6$rounds=12345$./A9z" },
];

describe.runIf(pythonCryptAvailable())("sha512Crypt against glibc (python3 crypt)", () => {
  const fromGlibc: string[] = JSON.parse(
    execFileSync(
      "python3",
      ["-W", "ignore", "-c", "import crypt, json, sys; print(json.dumps([crypt.crypt(c['password'], c['setting']) for c in json.load(sys.stdin)]))"],
      { input: JSON.stringify(glibcCases), encoding: "utf8" },
    ),
  ) as string[];

  glibcCases.forEach(({ password, setting }, i) => {
    it(`gives glibc's hash for a ${[...password].length}-character password with setting ${setting}`, () => {
      expect(fromGlibc[i]).toMatch(/^\$6\$/);
      expect(sha512Crypt(password, setting)).toBe(fromGlibc[i]);
      expect(verifySha512Crypt(password, fromGlibc[i]!)).toBe(true);
    });
  });

  it("produces random-salt hashes that glibc verifies", () => {
    const password = "Rand0m-salt ✓";
    const ours = sha512Crypt(password, undefined, 3000);
    const again = execFileSync("python3", ["-W", "ignore", "-c", "import crypt, sys; print(crypt.crypt(sys.argv[1], sys.argv[2]))", password, ours], {
      encoding: "utf8",
    }).trim();
    expect(again).toBe(ours);
  });
});

describe.runIf(opensslAvailable())("sha512Crypt against openssl passwd -6", () => {
  for (const [password, salt] of [
    ["Passw0rd!", "abcdefgh"],
    ["pässwörd密码", "abc"],
    ["q".repeat(200), "0123456789abcdef"],
  ] as const) {
    it(`gives openssl's hash for ${JSON.stringify(password.slice(0, 12))} with salt ${salt}`, () => {
      const expected = execFileSync("openssl", ["passwd", "-6", "-salt", salt, password], { encoding: "utf8" }).trim();
      expect(sha512Crypt(password, salt)).toBe(expected);
    });
  }
});
