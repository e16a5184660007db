/**
 * Failpoints: named places where a worker can be made to die on purpose, to prove that a crash
 * there leaves nothing inconsistent. Enabled by FAILPOINTS=name,name (never in production); a
 * process that reaches an enabled failpoint kills itself with SIGKILL: no clean-up, no finally,
 * exactly like a power cut.
 */
export const FAILPOINTS = [
  /** The payment is loaded and PENDING; the provider has not been asked anything. */
  'settle.before-provider',
  /** The provider has accepted the payment; our database does not know yet. */
  'settle.after-provider-accepted',
  /** Inside the refund transaction, after its statement, before COMMIT. */
  'settle.during-refund',
  /** Inside the transaction that applies a page of provider events, before the cursor moves and COMMIT. */
  'provider-events.before-cursor',
] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export interface Failpoints {
  hit(name: Failpoint): void;
}

export function createFailpoints(enabled: readonly string[], crash: () => void = () => process.kill(process.pid, 'SIGKILL')): Failpoints {
  const unknown = enabled.filter((name) => !(FAILPOINTS as readonly string[]).includes(name));
  if (unknown.length > 0) throw new Error(`FAILPOINTS: unknown failpoint(s) ${unknown.join(', ')}; known: ${FAILPOINTS.join(', ')}`);
  const on = new Set(enabled);
  return {
    hit(name) {
      if (on.has(name)) crash();
    },
  };
}

export const noFailpoints: Failpoints = { hit: () => undefined };
