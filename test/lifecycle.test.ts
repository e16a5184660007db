import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { buildSchema, GraphQLEnumType } from 'graphql';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import type { Tx } from '../src/db/prisma.ts';
import { $Enums } from '../src/generated/prisma/client.ts';
import type { PaymentStatus as GraphQLPaymentStatus } from '../src/graphql/generated/types.ts';
import {
  type Arrow,
  COUNTS_AGAINST_DAILY_LIMIT,
  canTransition,
  EXECUTED,
  isRefunded,
  isSettled,
  isTerminal,
  LET_THROUGH,
  PAYMENT_STATUSES,
  type PaymentStatus,
  REFUNDED,
  SETTLED,
  STOPPED,
  sqlStatuses,
  TRANSITIONS,
} from '../src/payments/lifecycle.ts';
import { refund } from '../src/payments/transitions.ts';
import { createTestDatabase } from './helpers.ts';

/**
 * The payment lifecycle is declared once (src/payments/lifecycle.ts) and repeated where other
 * languages need it: the PostgreSQL enum and the transition trigger's table, the Prisma enum, the
 * GraphQL enum. These tests (and the type assertions, which `npm run typecheck` checks) fail until
 * every copy agrees, so a status cannot be added or an arrow drawn in one place only.
 */

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let client: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase();
  client = new pg.Client({ connectionString: db.url });
  await client.connect();
});

afterAll(async () => {
  await client?.end();
  await db?.drop();
});

const pairsOf = (table: typeof TRANSITIONS) =>
  PAYMENT_STATUSES.flatMap((from) => (table[from] as readonly PaymentStatus[]).map((to) => `${from}>${to}`)).sort();

describe('one list of statuses', () => {
  it('lists the same statuses, in the same order, in TypeScript, PostgreSQL, Prisma and GraphQL', async () => {
    const { rows } = await client.query<{ s: string }>(`SELECT unnest(enum_range(NULL::"PaymentStatus"))::text AS s`);
    expect(rows.map((r) => r.s)).toEqual(PAYMENT_STATUSES);
    expect(Object.values($Enums.PaymentStatus)).toEqual(PAYMENT_STATUSES);
    const type = buildSchema(readFileSync(new URL('../schema.graphql', import.meta.url), 'utf8')).getType('PaymentStatus');
    expect(type).toBeInstanceOf(GraphQLEnumType);
    expect(type instanceof GraphQLEnumType ? type.getValues().map((v) => v.name) : []).toEqual(PAYMENT_STATUSES);
  });

  it('has the same status type in TypeScript, Prisma and the generated GraphQL types (checked by the type checker)', () => {
    expectTypeOf<PaymentStatus>().toEqualTypeOf<$Enums.PaymentStatus>();
    expectTypeOf<PaymentStatus>().toEqualTypeOf<GraphQLPaymentStatus>();
  });

  it('freezes the list, the table and the named sets', () => {
    expect(Object.isFrozen(PAYMENT_STATUSES)).toBe(true);
    expect(Object.isFrozen(TRANSITIONS)).toBe(true);
    for (const set of [COUNTS_AGAINST_DAILY_LIMIT, LET_THROUGH, SETTLED, STOPPED, EXECUTED, REFUNDED])
      expect(Object.isFrozen(set)).toBe(true);
  });
});

describe('the transition table', () => {
  it('moves a payment only along the lifecycle: SCHEDULED to its day, PENDING to settlement, HELD to review, COMPLETED to a return', () => {
    const allowed = new Set([
      'SCHEDULED>PENDING',
      'SCHEDULED>HELD',
      'SCHEDULED>CANCELLED',
      'SCHEDULED>FAILED',
      'PENDING>COMPLETED',
      'PENDING>CANCELLED',
      'PENDING>FAILED',
      'HELD>PENDING',
      'HELD>CANCELLED',
      'COMPLETED>RETURNED',
    ]);
    for (const from of PAYMENT_STATUSES) {
      for (const to of PAYMENT_STATUSES) {
        expect(canTransition(from, to), `${from} > ${to}`).toBe(allowed.has(`${from}>${to}`));
      }
    }
  });

  it('does not compile an arrow the table does not have', () => {
    // @ts-expect-error a COMPLETED payment never goes back to PENDING
    const back: Arrow<'COMPLETED'> = 'PENDING';
    // @ts-expect-error nothing leaves CANCELLED
    const revived: Arrow<'CANCELLED'> = 'PENDING';
    const refundTo = (tx: Tx) => {
      // @ts-expect-error a refund ends CANCELLED or FAILED, never RETURNED
      void refund(tx, 'id', 'RETURNED', 'RECIPIENT_REJECTED');
    };
    expect([back, revived, typeof refundTo]).toEqual(['PENDING', 'PENDING', 'function']);
    expectTypeOf<Arrow<'SCHEDULED'>>().toEqualTypeOf<'PENDING' | 'HELD' | 'FAILED' | 'CANCELLED'>();
  });

  it('ends paymentUpdated at COMPLETED or any terminal status, and has the money back in CANCELLED, FAILED and RETURNED', () => {
    expect(PAYMENT_STATUSES.filter(isTerminal)).toEqual(['CANCELLED', 'FAILED', 'RETURNED']);
    expect(PAYMENT_STATUSES.filter(isSettled)).toEqual(['COMPLETED', ...PAYMENT_STATUSES.filter(isTerminal)]);
    expect(PAYMENT_STATUSES.filter(isRefunded)).toEqual(['CANCELLED', 'FAILED', 'RETURNED']);
    expect([...REFUNDED].sort()).toEqual([...STOPPED, 'RETURNED'].sort());
    expect([...SETTLED].sort()).toEqual([...STOPPED, ...EXECUTED].sort());
    // What is let through counts against the limit; a held payment counts too, though not let through.
    expect(COUNTS_AGAINST_DAILY_LIMIT.filter((s) => !(LET_THROUGH as readonly PaymentStatus[]).includes(s))).toEqual(['HELD']);
  });

  it('changes a payment at most four times along any sequence of attempted transitions, and never leaves a terminal status', () => {
    // The longest way through the table: a scheduled payment held on its day for review,
    // approved, settled, and returned by the recipient's bank.
    const longest: PaymentStatus[] = ['SCHEDULED', 'HELD', 'PENDING', 'COMPLETED', 'RETURNED'];
    expect(longest.slice(1).every((to, i) => canTransition(longest[i] as PaymentStatus, to))).toBe(true);
    fc.assert(
      fc.property(
        fc.constantFrom<PaymentStatus>('SCHEDULED', 'PENDING', 'HELD'),
        fc.array(fc.constantFrom(...PAYMENT_STATUSES)),
        (start, attempts) => {
          let status: PaymentStatus = start;
          let changes = 0;
          for (const next of attempts) {
            if (isTerminal(status)) expect(canTransition(status, next)).toBe(false);
            if (canTransition(status, next)) {
              status = next;
              changes++;
            }
          }
          return changes <= longest.length - 1;
        },
      ),
    );
  });

  it('renders a set as an SQL list only from real statuses', () => {
    expect(sqlStatuses(LET_THROUGH)).toBe(`'PENDING', 'COMPLETED'`);
    expect(() => sqlStatuses(["PENDING') OR true --" as PaymentStatus])).toThrow(/not a payment status/);
    expect(() => sqlStatuses([])).toThrow(/empty/);
  });
});

describe('one module for the statements', () => {
  it('writes payments (an insert, or any update) only in src/payments/transitions.ts', () => {
    const src = new URL('../src/', import.meta.url);
    const writers = readdirSync(src, { recursive: true, encoding: 'utf8' })
      .filter((file) => file.endsWith('.ts') && !file.startsWith('generated/') && !file.includes('/generated/'))
      .filter((file) => /\b(UPDATE|INSERT\s+INTO)\s+"?payments"?\b/i.test(readFileSync(new URL(file, src), 'utf8')));
    expect(writers).toEqual(['payments/transitions.ts']);
  });
});

describe('the database guard', () => {
  const CUSTOMER = '00000000-0000-4000-8000-00000000c001';
  const ACCOUNT = '00000000-0000-4000-8000-00000000a001';
  /** A payment inserted directly in `status` (inserts are not what the trigger guards); a HELD one says when it was held. */
  async function paymentIn(status: PaymentStatus, key: string): Promise<string> {
    const { rows } = await client.query<{ id: string }>(
      `INSERT INTO payments (account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code, recipient_account_number, status, held_at)
       VALUES ($1, $2, repeat('a', 64), 100, 'R', '123456', '12345678', $3::"PaymentStatus", CASE WHEN $3 = 'HELD' THEN now() END)
       RETURNING id::text`,
      [ACCOUNT, key, status],
    );
    const id = rows[0]?.id;
    if (!id) throw new Error('no payment inserted');
    return id;
  }

  beforeAll(async () => {
    await client.query(`INSERT INTO customers (id, name) VALUES ($1, 'Lifecycle')`, [CUSTOMER]);
    await client.query(
      `INSERT INTO accounts (id, customer_id, name, sort_code, account_number, balance) VALUES ($1, $2, 'Main', '608371', '55554444', 0)`,
      [ACCOUNT, CUSTOMER],
    );
  });

  it('holds exactly the arrows of the table in payment_transitions', async () => {
    const { rows } = await client.query<{ pair: string }>(`SELECT from_status || '>' || to_status AS pair FROM payment_transitions`);
    expect(rows.map((r) => r.pair).sort()).toEqual(pairsOf(TRANSITIONS));
  });

  it('lets exactly the arrows of the table through a raw UPDATE, and any same-status update', async () => {
    for (const from of PAYMENT_STATUSES) {
      const id = await paymentIn(from, `guard-${from}`);
      for (const to of PAYMENT_STATUSES) {
        await client.query('BEGIN');
        try {
          const outcome = await client
            .query(`UPDATE payments SET status = $2::"PaymentStatus", held_at = coalesce(held_at, now()) WHERE id = $1::uuid`, [id, to])
            .then(
              () => 'changed',
              (error: unknown) => (error instanceof Error && 'code' in error ? String(error.code) : 'other'),
            );
          expect(outcome, `${from} > ${to}`).toBe(from === to || canTransition(from, to) ? 'changed' : '23514');
        } finally {
          await client.query('ROLLBACK');
        }
      }
    }
  });

  it('refuses COMPLETED -> PENDING by raw SQL with a message naming the payment and the two statuses', async () => {
    const id = await paymentIn('COMPLETED', 'guard-back');
    await expect(client.query(`UPDATE payments SET status = 'PENDING' WHERE id = $1::uuid`, [id])).rejects.toMatchObject({
      code: '23514',
      message: `payment ${id} may not change from COMPLETED to PENDING: not an arrow of the payment lifecycle`,
    });
    const { rows } = await client.query(`SELECT status::text AS status FROM payments WHERE id = $1::uuid`, [id]);
    expect(rows).toEqual([{ status: 'COMPLETED' }]);
  });

  it("counts the same statuses against the daily limit in the trigger that gives a day's total back", async () => {
    const { rows } = await client.query<{ def: string }>(`SELECT pg_get_functiondef('payments_release_daily_limit'::regproc) AS def`);
    const lists = [...(rows[0]?.def ?? '').matchAll(/IN \(([^)]*)\)/g)].map((m) =>
      [...(m[1] ?? '').matchAll(/'([A-Z_]+)'/g)].map((s) => s[1]),
    );
    expect(lists).toEqual([[...COUNTS_AGAINST_DAILY_LIMIT], [...COUNTS_AGAINST_DAILY_LIMIT]]);
  });
});
