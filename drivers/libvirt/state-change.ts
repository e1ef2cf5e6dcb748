/**
 * Deadlines that do not lie. A libvirt call that changes a domain (start, define,
 * destroy, attach, …) is not failed by its deadline alone: libvirt on a busy host
 * may take minutes to get to it (it starts domains one after another) while it is
 * perfectly healthy. So, once the call has gone unanswered for `checkAfterMs`, the
 * driver looks at the domain with a read-only call (domstate, dumpxml) every
 * `checkEveryMs`:
 *
 * - the look shows the change made        → success (the still-waiting virsh is let go);
 * - libvirt answers, the change not made  → libvirt is alive and busy: keep waiting
 *                                            (up to `overallMs` in all);
 * - libvirt answers nothing               → keep waiting until it has been silent for
 *                                            `silentLimitMs`, then give up.
 *
 * When the call is given up (overall bound, or libvirt silent too long), or when it
 * failed because the connection to libvirt broke or timed out, looks decide: the change
 * made is a success; a change under way (libvirtd goes on with a job whose client left) is
 * looked at again until it is made, within the overall bound; otherwise the call fails,
 * saying what libvirt showed.
 * Any other failure (libvirt refused the call) is the call's own answer and is thrown as is.
 */
import { LibvirtUnavailableError } from "./types.js";
import type { DriverLogger } from "./events.js";

export interface StateChangePolicy {
  /** How long a call may go unanswered before the driver looks at the domain, ms. Default 30 000. */
  checkAfterMs: number;
  /** Time between two looks while the call is still running, ms. Default 10 000. */
  checkEveryMs: number;
  /**
   * The longest the driver waits while libvirt answers nothing at all (no look answered), ms.
   * Default 300 000: 32 TCG guests booting on 2 cores left libvirtd silent for over 2 min.
   */
  silentLimitMs: number;
  /** The overall bound of one call, however busy libvirt is, ms. Default 900 000 (15 min). */
  overallMs: number;
  /** Timeout of one look (a read-only virsh call), ms. Default 15 000. */
  lookTimeoutMs: number;
}

export const DEFAULT_STATE_CHANGE_POLICY: Readonly<StateChangePolicy> = Object.freeze({
  checkAfterMs: 30_000,
  checkEveryMs: 10_000,
  silentLimitMs: 300_000,
  overallMs: 900_000,
  lookTimeoutMs: 15_000,
});

/** What a read-only look at the domain found. */
export type Look =
  /**
   * libvirt answered; `done` when the domain shows the change; `underWay` when it shows the
   * change in progress (a domain being started is paused until libvirt lets its vCPUs run);
   * `detail` says what was seen (for logs).
   */
  | { answered: true; done: boolean; underWay?: boolean; detail: string }
  /** libvirt did not answer the look (it timed out, or libvirtd is gone). */
  | { answered: false; detail: string };

export interface StateChangeCall {
  /** For messages, e.g. "start ins-abc12345". */
  what: string;
  /** Runs the state-changing call; it must stop (reject) when `signal` is aborted. */
  call: (signal: AbortSignal) => Promise<void>;
  /** One read-only look at the domain; never throws (a failure is { answered: false }). */
  look: () => Promise<Look>;
  /** Whether a failure of the call may have left the change made (timeouts, lost connections). */
  uncertain: (error: unknown) => boolean;
  policy: StateChangePolicy;
  logger?: DriverLogger;
  /** The clock (tests use fake timers); default Date.now. */
  now?: () => number;
}

type Raced = { settled: true; error?: unknown; ok: boolean } | { settled: false };

/**
 * Runs a state-changing libvirt call under the policy above. Resolves when the change
 * was made (answered by the call or seen by a look); rejects with the call's own error,
 * or with a LibvirtUnavailableError when libvirt did not get it done within the bounds.
 */
export async function awaitStateChange(c: StateChangeCall): Promise<void> {
  const now = c.now ?? Date.now;
  const startedAt = now();
  const abort = new AbortController();
  let outcome: Raced = { settled: false };
  const running = c.call(abort.signal).then(
    () => {
      outcome = { settled: true, ok: true };
    },
    (error: unknown) => {
      outcome = { settled: true, ok: false, error };
    },
  );
  const waitFor = async (ms: number): Promise<Raced> => {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([running, new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, ms))))]);
    clearTimeout(timer);
    return outcome;
  };
  const letGo = async () => {
    abort.abort(new Error(`${c.what}: given up by the driver`));
    await running;
  };

  let r = await waitFor(c.policy.checkAfterMs);
  let lastAnswerAt = startedAt;
  let warned = false;
  while (!r.settled) {
    const look = await c.look();
    if (look.answered) lastAnswerAt = now();
    const elapsed = now() - startedAt;
    if (look.answered && look.done) {
      await letGo();
      c.logger?.info({ call: c.what, waitedMs: elapsed, seen: look.detail }, "libvirt made the change before it answered the call");
      return;
    }
    if (!warned) {
      warned = true;
      c.logger?.warn(
        { call: c.what, waitedMs: elapsed, libvirtAnswers: look.answered, seen: look.detail, boundMs: c.policy.overallMs },
        "libvirt is slow to answer; waiting for it",
      );
    }
    const silentFor = now() - lastAnswerAt;
    if (elapsed >= c.policy.overallMs || silentFor >= c.policy.silentLimitMs) {
      await letGo();
      return decide(c, {
        reason: `virsh ${c.what}: ${
          silentFor >= c.policy.silentLimitMs
            ? `libvirt answered nothing for ${seconds(silentFor)} s`
            : `libvirt did not finish it in ${seconds(elapsed)} s`
        }`,
        startedAt,
        now,
      });
    }
    r = await waitFor(Math.min(c.policy.checkEveryMs, c.policy.overallMs - elapsed));
  }
  if (r.ok) return;
  if (!c.uncertain(r.error)) throw r.error;
  return decide(c, { reason: r.error instanceof Error ? r.error.message : `virsh ${c.what}: ${String(r.error)}`, startedAt, now, cause: r.error });
}

/**
 * The last word after a call that ended without an answer: looks until libvirt answers
 * (while the bounds allow), then the domain's state decides.
 */
async function decide(c: StateChangeCall, o: { /** The message so far, "virsh <what>: …". */ reason: string; startedAt: number; now: () => number; cause?: unknown }): Promise<void> {
  let silentSince = o.now();
  for (;;) {
    const look = await c.look();
    const t = o.now();
    if (look.answered) {
      silentSince = t;
      if (look.done) {
        c.logger?.info({ call: c.what, seen: look.detail, reason: o.reason }, "the call did not answer, but libvirt made the change");
        return;
      }
      if (look.underWay && t - o.startedAt < c.policy.overallMs) {
        await new Promise((r) => setTimeout(r, c.policy.checkEveryMs));
        continue;
      }
      throw new LibvirtUnavailableError(`${o.reason}; the domain shows it not done (${look.detail})`, {
        cause: o.cause,
      });
    }
    if (t - silentSince >= c.policy.silentLimitMs || t - o.startedAt >= c.policy.overallMs + c.policy.silentLimitMs) {
      throw new LibvirtUnavailableError(`${o.reason}, and libvirt does not answer (${look.detail}); the outcome is unknown`, {
        cause: o.cause,
      });
    }
    await new Promise((r) => setTimeout(r, c.policy.checkEveryMs));
  }
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}
