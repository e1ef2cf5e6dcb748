/** Small waiting and refusal helpers the integration tests share. */

/** Polls `check` every 250 ms until it is true; throws when `timeoutMs` passes first. */
export async function waitUntil(check: () => Promise<boolean>, timeoutMs = 120_000, what = "the condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** The SDK error a request is refused with; throws when the request is accepted. */
export async function refused(p: Promise<unknown>): Promise<{ code?: string; message?: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message?: string };
  }
  throw new Error("the request was accepted");
}
