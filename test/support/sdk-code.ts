/** The code of the SDK error a call fails with (an answer is a test failure). */
export async function codeOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (typeof code === "string") return code;
    throw error;
  }
  throw new Error("the call was answered, not refused");
}
