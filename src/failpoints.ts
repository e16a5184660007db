/**
 * Failpoints: named places where a process can be made to die on purpose, to prove that a crash
 * there leaves nothing inconsistent. Enabled by FAILPOINTS=name,name (never in production); a
 * process that reaches an enabled failpoint kills itself with SIGKILL: no clean-up, no finally,
 * exactly like a power cut. `name:stop` instead freezes the process there once (SIGSTOP, until
 * someone sends SIGCONT), like a paused VM or a partitioned host: its sessions stay open on the server.
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
  /** Inside sendPayment's transaction, after the debit (the account's row is locked), before COMMIT. */
  'send-payment.in-transaction',
] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export interface Failpoints {
  hit(name: Failpoint): void;
}

export function createFailpoints(
  enabled: readonly string[],
  crash: () => void = () => process.kill(process.pid, 'SIGKILL'),
  freeze: () => void = () => process.kill(process.pid, 'SIGSTOP'),
): Failpoints {
  const parsed = enabled.map((entry) => {
    const [name = '', action = 'crash'] = entry.split(':');
    return { name, action };
  });
  const unknown = parsed.filter((f) => !(FAILPOINTS as readonly string[]).includes(f.name) || !['crash', 'stop'].includes(f.action));
  if (unknown.length > 0) {
    throw new Error(
      `FAILPOINTS: unknown failpoint(s) ${unknown.map((f) => `${f.name}:${f.action}`).join(', ')}; known: ${FAILPOINTS.join(', ')} (optionally :stop)`,
    );
  }
  const crashes = new Set(parsed.filter((f) => f.action === 'crash').map((f) => f.name));
  const freezes = new Set(parsed.filter((f) => f.action === 'stop').map((f) => f.name));
  return {
    hit(name) {
      if (crashes.has(name)) crash();
      // Once: a process resumed with SIGCONT carries on as a healthy one would.
      if (freezes.delete(name)) freeze();
    },
  };
}

export const noFailpoints: Failpoints = { hit: () => undefined };
