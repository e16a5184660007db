import { describe, expect, it } from 'vitest';
import { plan, runChaos } from '../tools/chaos/run.ts';

describe('the chaos run', () => {
  it('plans the same workload and schedule for the same seed, and another for another seed', () => {
    expect(plan(7, 500).digest).toBe(plan(7, 500).digest);
    expect(plan(7, 500).digest).not.toBe(plan(8, 500).digest);
    const { schedule } = plan(7, 500);
    expect(schedule.flatMap((c) => c.actions).filter((a) => a.kind === 'restart-postgres')).toHaveLength(1);
    // One database failover, after the restart, among payments in flight (the last checkpoint leaves some after it).
    const failovers = schedule.flatMap((c, k) => (c.actions.some((a) => a.kind === 'failover') ? [k] : []));
    expect(failovers).toHaveLength(1);
    expect(failovers[0]).toBeGreaterThan(schedule.findIndex((c) => c.actions.some((a) => a.kind === 'restart-postgres')));
    expect(failovers[0]).toBeLessThan(schedule.length - 1);
    expect(schedule.flatMap((c) => c.actions).some((a) => a.kind === 'restart-api')).toBe(true);
    expect(schedule.flatMap((c) => c.actions).some((a) => a.kind === 'kill-worker')).toBe(true);
    // Returns of accepted payments and inbound credits, some to accounts we do not have, are among the faults.
    const actions = schedule.flatMap((c) => c.actions);
    expect(actions.some((a) => a.kind === 'faults' && (a.faults.returnRate ?? 0) > 0)).toBe(true);
    const credits = actions.flatMap((a) => (a.kind === 'credits' ? a.credits : []));
    expect(credits.length).toBeGreaterThanOrEqual(100);
    expect(credits.some((c) => c.account === null)).toBe(true);
    // An API process and a worker are frozen mid-load; days pass on the runner's clock.
    const freezes = actions.flatMap((a) => (a.kind === 'freeze' ? [a.role] : []));
    expect(freezes).toEqual(['api', 'worker']);
    expect(actions.filter((a) => a.kind === 'next-day').length).toBeGreaterThanOrEqual(2);
    // Standing orders (some due today, some cancelled), scheduled payments, payments to new payees.
    const { safety } = plan(7, 300);
    const orders = safety.filter((s) => s.kind === 'standing-order');
    expect(orders.length).toBeGreaterThanOrEqual(10);
    expect(orders.some((o) => o.firstIn === 0)).toBe(true);
    expect(orders.some((o) => o.toPayee)).toBe(true);
    expect(safety.some((s) => s.kind !== 'to-payee' && s.cancelAt !== null)).toBe(true);
    const scheduled = safety.filter((s) => s.kind === 'scheduled');
    expect(scheduled.length).toBeGreaterThanOrEqual(10);
    expect(scheduled.some((s) => s.executeIn >= 30 && s.cancelAt !== null)).toBe(true);
    expect(safety.some((s) => s.kind === 'to-payee')).toBe(true);
  });

  it('keeps every invariant through provider faults, SIGKILLed workers, an API restart, frozen processes and a PostgreSQL restart', async () => {
    // One embedded PostgreSQL: the replicated cluster's set-up would cost the suite's time budget, and
    // test/failover.test.ts fails a primary over under load already. The fault is then reported skipped.
    const result = await runChaos({ payments: 200, seed: 20261124, concurrency: 12, failover: false });
    console.info(`\n${result.table}\n`);
    expect(result.problems).toEqual([]);
    expect(result.table).toMatch(/event streams followed .*\| 4 accounts, [1-9]\d* events \(\d+\): ok \|/);
    // Some payments were held on creation, and the operator reviewed them during the run.
    expect(result.table).toMatch(
      /HELD on creation: approved \/ rejected by the operator \(review retries\) *\| [1-9]\d*: [1-9]\d* \/ [1-9]\d* \(\d+\) \|/,
    );
    // Issue 20's paths, each taken a few times, and each seen by the invariants (all ok above).
    expect(result.table).toMatch(/\| database failover *\| SKIPPED: disabled for this run \(--no-failover\) \|/);
    expect(result.table).toMatch(/\| processes frozen \(SIGSTOP \.\.\. SIGCONT\), seconds frozen *\| 2, \d+\.\d s \|/);
    expect(result.table).toMatch(
      /\| payees added \(let through\) \/ CoP checks MATCH, NO_MATCH \/ refused PAYEE_NOT_CONFIRMED *\| 24 \([1-9]\d*\) \/ 6, 6 \/ 18 \|/,
    );
    expect(result.table).toMatch(/\| standing orders created \(cancelled\) *\| [1-9]\d* \([1-9]\d*\) \|/);
    expect(result.table).toMatch(
      /\| standing-order occurrences: made \/ executed \/ cancelled \/ waiting *\| [1-9]\d* \/ [1-9]\d* \/ \d+ \/ \d+ \|/,
    );
    expect(result.table).toMatch(
      /\| scheduled payments: made \/ executed \/ cancelled \/ waiting *\| [1-9]\d* \/ [1-9]\d* \/ [1-9]\d* \/ \d+ \|/,
    );
    expect(result.table).toMatch(
      /\| payments HELD \(under REVIEW_THRESHOLD\): approved \/ rejected \/ expired \/ cancelled by customer *\| [1-9]\d* \([1-9]\d*\): [1-9]\d* \/ [1-9]\d* \/ [1-9]\d* \/ \d+ \|/,
    );
    expect(result.table).toMatch(/\| money conserved: balances = deposits \+ credits - at the provider *\| \d+ = \d+: ok \|/);
    expect(result.table).toMatch(
      /inbound credits sent \(to unknown accounts\): credited \/ returned +\| \d+ \([1-9]\d*\): \d+ \/ [1-9]\d* \|/,
    );
    expect(result.ok).toBe(true);
    // A quiet machine runs it in about a minute; two cores shared with the rest of the suite take
    // two to three. The run ends on its own (every step is bounded); this only catches a hang.
  }, 300_000);
});
