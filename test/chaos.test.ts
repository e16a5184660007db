import { describe, expect, it } from 'vitest';
import { plan, runChaos } from '../tools/chaos/run.ts';

describe('the chaos run', () => {
  it('plans the same workload and schedule for the same seed, and another for another seed', () => {
    expect(plan(7, 500).digest).toBe(plan(7, 500).digest);
    expect(plan(7, 500).digest).not.toBe(plan(8, 500).digest);
    const { schedule } = plan(7, 500);
    expect(schedule.flatMap((c) => c.actions).filter((a) => a.kind === 'restart-postgres')).toHaveLength(1);
    expect(schedule.flatMap((c) => c.actions).some((a) => a.kind === 'restart-api')).toBe(true);
    expect(schedule.flatMap((c) => c.actions).some((a) => a.kind === 'kill-worker')).toBe(true);
    // Returns of accepted payments and inbound credits, some to accounts we do not have, are among the faults.
    const actions = schedule.flatMap((c) => c.actions);
    expect(actions.some((a) => a.kind === 'faults' && (a.faults.returnRate ?? 0) > 0)).toBe(true);
    const credits = actions.flatMap((a) => (a.kind === 'credits' ? a.credits : []));
    expect(credits.length).toBeGreaterThanOrEqual(100);
    expect(credits.some((c) => c.account === null)).toBe(true);
  });

  it('keeps every invariant through provider faults, SIGKILLed workers, an API restart and a PostgreSQL restart', async () => {
    const result = await runChaos({ payments: 200, seed: 20261124, concurrency: 12 });
    console.info(`\n${result.table}\n`);
    expect(result.problems).toEqual([]);
    expect(result.table).toMatch(/event streams followed .*\| 4 accounts, [1-9]\d* events \(\d+\): ok \|/);
    // Some payments were held, and the operator reviewed every one of them during the run.
    expect(result.table).toMatch(
      /HELD for review: approved \/ rejected by the operator \(review retries\) *\| [1-9]\d*: \d+ \/ \d+ \(\d+\) \|/,
    );
    expect(result.table).toMatch(
      /inbound credits sent \(to unknown accounts\): credited \/ returned +\| \d+ \([1-9]\d*\): \d+ \/ [1-9]\d* \|/,
    );
    expect(result.ok).toBe(true);
    // A quiet machine runs it in about a minute; two cores shared with the rest of the suite take
    // two to three. The run ends on its own (every step is bounded); this only catches a hang.
  }, 300_000);
});
