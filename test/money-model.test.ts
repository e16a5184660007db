import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { audit, formatAudit } from '../src/audit.ts';
import { MoneyScalar } from '../src/graphql/scalars.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createSettlement } from '../src/payments/settlement.ts';
import { createProviderClient } from '../src/provider/client.ts';
import { gql, paymentInput, type Stack, startStack } from './helpers.ts';

/** The element at `i`, which must be there. */
function at<T>(list: readonly T[], i: number): T {
  const value = list[i];
  if (value === undefined) throw new Error(`nothing at ${i}`);
  return value;
}

/**
 * Model-based property test: random sequences of deposits, payments (some to recipients the
 * provider rejects), replays and settlements run against the real service, next to a model that
 * is just an integer balance. After every step the real balance equals the model's, and at the
 * end the audit holds.
 */
let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ worker: false });
});
afterAll(async () => {
  await stack?.stop();
});

type Command =
  | { kind: 'deposit'; amount: number }
  | { kind: 'send'; amount: number; rejected: boolean }
  | { kind: 'replay'; index: number }
  | { kind: 'settle' };

const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ kind: fc.constant('deposit' as const), amount: fc.integer({ min: 1, max: 50_000 }) }),
  fc.record({ kind: fc.constant('send' as const), amount: fc.integer({ min: 1, max: 60_000 }), rejected: fc.boolean() }),
  fc.record({ kind: fc.constant('replay' as const), index: fc.nat() }),
  fc.record({ kind: fc.constant('settle' as const) }),
);

describe('money arithmetic against a model', () => {
  it('keeps the balance equal to the model and never below zero, whatever the sequence', async () => {
    const provider = createProviderClient({ baseUrl: stack.emulator.url, apiKey: stack.config.providerApiKey, timeoutMs: 2_000 });
    const settlement = createSettlement({ prisma: stack.db, provider, logger: stack.logger, metrics: createMetrics() });

    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 25 }), async (commands) => {
        const alice = await stack.newCustomer(0);
        let model = 0;
        const sent: Array<{ input: Record<string, unknown>; id: string; amount: number; rejected: boolean }> = [];
        const pending = new Set<string>();
        let deposits = 0;
        for (const c of commands) {
          if (c.kind === 'deposit') {
            const r = await gql(
              stack.apiUrl,
              stack.operatorToken,
              'mutation($a: ID!, $p: Money!, $k: String!) { depositFunds(input: { accountId: $a, amount: $p, idempotencyKey: $k }) { id } }',
              {
                a: alice.accountId,
                p: c.amount,
                k: `d${deposits++}`,
              },
            );
            expect(r.errors).toBeUndefined();
            model += c.amount;
          } else if (c.kind === 'send') {
            const input = paymentInput(alice.accountId, {
              amount: c.amount,
              recipient: { name: 'Model', sortCode: c.rejected ? '000000' : '123456', accountNumber: '12345678' },
            });
            const r = await stack.send(alice.token, input);
            if (c.amount <= model) {
              expect(r.errors).toEqual([]);
              model -= c.amount;
              sent.push({ input, id: r.payment?.id ?? '', amount: c.amount, rejected: c.rejected });
              pending.add(r.payment?.id ?? '');
            } else {
              expect(r.errors.map((e) => e.code)).toEqual(['INSUFFICIENT_FUNDS']);
            }
          } else if (c.kind === 'replay' && sent.length > 0) {
            const original = at(sent, c.index % sent.length);
            const r = await stack.send(alice.token, original.input);
            expect(r.payment?.id).toBe(original.id);
          } else if (c.kind === 'settle') {
            for (const id of pending) {
              await settlement.settle(id);
              const s = sent.find((p) => p.id === id);
              if (!s) throw new Error(`payment ${id} was not sent here`);
              if (s.rejected) model += s.amount;
            }
            pending.clear();
          }
          const account = await stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } });
          expect(account.balance).toBe(BigInt(model));
          expect(account.balance >= 0n).toBe(true);
        }
      }),
      { numRuns: 15 },
    );
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
  });
});

describe('the Money scalar', () => {
  it('round-trips every safe integer exactly and refuses everything else', () => {
    fc.assert(fc.property(fc.maxSafeInteger(), (n) => MoneyScalar.serialize(BigInt(n)) === n && MoneyScalar.parseValue(n) === n));
    fc.assert(
      fc.property(fc.double({ noInteger: true }), (x) => {
        expect(() => MoneyScalar.parseValue(x)).toThrow();
      }),
    );
    fc.assert(
      fc.property(fc.bigInt({ min: BigInt(Number.MAX_SAFE_INTEGER) + 1n }), (n) => {
        expect(() => MoneyScalar.serialize(n)).toThrow();
      }),
    );
    fc.assert(
      fc.property(fc.string(), (s) => {
        expect(() => MoneyScalar.parseValue(s)).toThrow();
      }),
    );
  });
});
