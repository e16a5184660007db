import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { MIGRATIONS_DIR, migrate, readMigrations } from '../src/db/migrate.ts';
import { createPrisma } from '../src/db/prisma.ts';
import { checkDoubleEntry } from '../src/ledger/books.ts';
import { createTestDatabase } from './helpers.ts';

/** A fresh, empty database (not a clone of the migrated template). */
async function emptyDatabase() {
  const db = await createTestDatabase();
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  await client.query('DROP SCHEMA public CASCADE; CREATE SCHEMA public; DROP SCHEMA IF EXISTS pgboss CASCADE');
  cleanups.push(async () => {
    await client.end();
    await db.drop();
  });
  return { ...db, client };
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe('the migration runner', () => {
  it('applies every migration once and records it as prisma migrate deploy does', async () => {
    const db = await emptyDatabase();
    const onDisk = await readMigrations();
    expect(await migrate(db.url)).toEqual(onDisk.map((m) => m.name));
    expect(await migrate(db.url)).toEqual([]);

    const { rows } = await db.client.query(
      'SELECT migration_name, checksum, finished_at, rolled_back_at, applied_steps_count FROM _prisma_migrations ORDER BY migration_name',
    );
    expect(rows).toEqual(
      onDisk.map((m) => ({
        migration_name: m.name,
        checksum: createHash('sha256').update(m.sql).digest('hex'),
        finished_at: expect.any(Date),
        rolled_back_at: null,
        applied_steps_count: 1,
      })),
    );
    const tables = await db.client.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
    expect(tables.rows.map((r) => r.tablename)).toEqual([
      '_prisma_migrations',
      'accounts',
      'customers',
      'daily_payment_totals',
      'ledger_entries',
      'operator_actions',
      'payee_checks',
      'payees',
      'payment_attempts',
      'payment_event_retention',
      'payment_events',
      'payment_transitions',
      'payments',
      'postings',
      'provider_credits',
      'provider_event_cursor',
      'provider_event_quarantine',
      'rate_limits',
      'reconciliation_breaks',
      'reconciliation_runs',
      'standing_orders',
      'webhook_deliveries',
      'webhook_dispatch_cursor',
      'webhook_endpoints',
    ]);
  });

  it('adds HELD in one migration and indexes held payments in the next, since a new enum value is usable only once committed', async () => {
    const db = await emptyDatabase();
    await migrate(db.url);
    const statuses = await db.client.query(`SELECT unnest(enum_range(NULL::"PaymentStatus"))::text AS s`);
    expect(statuses.rows.map((r) => r.s)).toContain('HELD');
    const index = await db.client.query(`SELECT indexdef FROM pg_indexes WHERE indexname = 'payments_held_at_idx'`);
    expect(index.rows[0]?.indexdef).toMatch(/\(held_at, id\) WHERE \(status = 'HELD'::"PaymentStatus"\)/);
  });

  it('is safe to run from several processes at once', async () => {
    const db = await emptyDatabase();
    const results = await Promise.all([migrate(db.url), migrate(db.url), migrate(db.url)]);
    expect(results.flat()).toHaveLength((await readMigrations()).length);
  });

  it('refuses to go on when an applied migration was edited', async () => {
    const db = await emptyDatabase();
    await migrate(db.url);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const first = (await readMigrations())[0]?.name ?? '';
    await writeFile(path.join(dir, first, 'migration.sql'), '-- edited\n');
    await expect(migrate(db.url, dir)).rejects.toThrow(/changed after it was applied/);
  });

  it('rolls back a failing migration and records nothing for it', async () => {
    const db = await emptyDatabase();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    await mkdir(path.join(dir, '99990101000000_broken'));
    await writeFile(
      path.join(dir, '99990101000000_broken', 'migration.sql'),
      'CREATE TABLE half_done (id int);\nSELECT nonsense FROM nowhere;\n',
    );
    await expect(migrate(db.url, dir)).rejects.toThrow(/99990101000000_broken failed/);
    const broken = await db.client.query("SELECT 1 FROM _prisma_migrations WHERE migration_name = '99990101000000_broken'");
    expect(broken.rowCount).toBe(0);
    const table = await db.client.query("SELECT to_regclass('public.half_done') AS t");
    expect(table.rows[0].t).toBeNull();
  });
});

describe('the money movement migration', () => {
  it('adds the new statuses and tables to a database that already holds payments, which keep their history', async () => {
    const db = await emptyDatabase();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    // A database from before money movement, payee safety and the transition guard (and what came after).
    const later = (await readMigrations()).map((m) => m.name).filter((name) => name >= '20261125040000_money_movement');
    for (const name of later) {
      await rm(path.join(dir, name), { recursive: true });
    }
    await migrate(db.url, dir);
    await db.client.query(`INSERT INTO customers (id, name) VALUES ('00000000-0000-4000-8000-000000000001', 'Old')`);
    await db.client.query(`INSERT INTO accounts (id, customer_id, name, sort_code, account_number, balance)
      VALUES ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001', 'Main', '608371', '12345678', 0)`);
    await db.client.query(`INSERT INTO payments (id, account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code, recipient_account_number, status)
      VALUES ('00000000-0000-4000-8000-000000000003', '00000000-0000-4000-8000-000000000002', 'k', repeat('a', 64), 100, 'R', '123456', '12345678', 'COMPLETED')`);

    expect(await migrate(db.url)).toEqual(later);
    const statuses = await db.client.query(
      `SELECT enum_range(NULL::"PaymentStatus")::text AS s, enum_range(NULL::"LedgerEntryKind")::text AS k`,
    );
    expect(statuses.rows[0]).toEqual({
      s: '{SCHEDULED,PENDING,COMPLETED,CANCELLED,FAILED,HELD,RETURNED}',
      k: '{DEPOSIT,PAYMENT_DEBIT,PAYMENT_REFUND,PAYMENT_RETURN,INBOUND_CREDIT}',
    });
    const old = await db.client.query(`SELECT status::text, execute_on, return_code, standing_order_id FROM payments`);
    expect(old.rows).toEqual([{ status: 'COMPLETED', execute_on: null, return_code: null, standing_order_id: null }]);
    // The new values are usable once the migration has committed; the old payment moves only along the lifecycle.
    await expect(db.client.query(`UPDATE payments SET status = 'PENDING'`)).rejects.toMatchObject({ code: '23514' });
    await db.client.query(`UPDATE payments SET status = 'RETURNED', return_code = 'AC01'`);
    expect((await db.client.query(`SELECT cursor FROM provider_event_cursor`)).rows).toEqual([{ cursor: null }]);
  });
});

describe('the let-through and held_at migration', () => {
  const CUSTOMER = '00000000-0000-4000-8000-000000000001';
  const ACCOUNT = '00000000-0000-4000-8000-000000000002';
  const ORDER = '00000000-0000-4000-8000-000000000009';
  const payee = (n: number) => `00000000-0000-4000-8000-0000000001${String(n).padStart(2, '0')}`;
  const payment = (n: number) => `00000000-0000-4000-8000-0000000002${String(n).padStart(2, '0')}`;
  const accountNumber = (n: number) => `1000000${n}`;

  it('records as let through only payees whose payment the rule of the time let through, and dates holds from when they began', async () => {
    const db = await emptyDatabase();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const later = (await readMigrations()).map((m) => m.name).filter((name) => name >= '20261127000000_let_through_and_held_at');
    for (const name of later) await rm(path.join(dir, name), { recursive: true });
    await migrate(db.url, dir);

    const q = (sql: string) => db.client.query(sql);
    await q(`INSERT INTO customers (id, name) VALUES ('${CUSTOMER}', 'Old')`);
    await q(`INSERT INTO accounts (id, customer_id, name, sort_code, account_number, balance)
      VALUES ('${ACCOUNT}', '${CUSTOMER}', 'Main', '608371', '12345678', 0)`);
    await q(`INSERT INTO standing_orders (id, account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code,
        recipient_account_number, frequency, first_payment_on)
      VALUES ('${ORDER}', '${ACCOUNT}', 'so', repeat('a', 64), 1, 'R', '123456', '${accountNumber(2)}', 'MONTHLY', '2026-11-20')`);
    // Payees 1-5, each saved ten days ago.
    for (let n = 1; n <= 5; n++) {
      await q(`INSERT INTO payees (id, customer_id, name, sort_code, account_number, created_at)
        VALUES ('${payee(n)}', '${CUSTOMER}', 'R', '123456', '${accountNumber(n)}', now() - interval '10 days')`);
    }
    const insert = (n: number, to: number, status: string, extra: { createdAgo: string; executeOn?: string; order?: boolean }) =>
      q(`INSERT INTO payments (id, account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code,
          recipient_account_number, status, created_at, execute_on, standing_order_id)
        VALUES ('${payment(n)}', '${ACCOUNT}', 'k${n}', repeat('a', 64), 1, 'R', '123456', '${accountNumber(to)}', '${status}',
          now() - interval '${extra.createdAgo}', ${extra.executeOn ?? 'NULL'}, ${extra.order ? `'${ORDER}'` : 'NULL'})`);
    // 1: an immediate payment, not held, completed 9 days ago, and a later one: let through at the first.
    await insert(1, 1, 'COMPLETED', { createdAgo: '9 days' });
    await insert(2, 1, 'PENDING', { createdAgo: '1 day' });
    // 2: only a standing-order occurrence: its day never applied the new-payee hold.
    await insert(3, 2, 'COMPLETED', { createdAgo: '8 days', executeOn: `'2026-11-20'`, order: true });
    // 3: held, then approved by an operator 7 days ago: let through at the approval.
    await insert(4, 3, 'COMPLETED', { createdAgo: '8 days' });
    await q(
      `INSERT INTO operator_actions (operator, action, target_id, at) VALUES ('op', 'approvePayment', '${payment(4)}', now() - interval '7 days')`,
    );
    // 4: a payment made before the payee was saved, and one rejected in review: neither lets it through.
    await insert(5, 4, 'COMPLETED', { createdAgo: '11 days' });
    await insert(6, 4, 'CANCELLED', { createdAgo: '2 days' });
    // 5: a payment scheduled two days ahead of its creation, run on its day: it skipped the hold.
    await insert(7, 5, 'COMPLETED', { createdAgo: '6 days', executeOn: `(now() - interval '4 days')::date` });
    // Held now: one held when it was taken, one scheduled five days ago and held on its day (today).
    await insert(8, 1, 'HELD', { createdAgo: '0 seconds' });
    await insert(9, 1, 'SCHEDULED', { createdAgo: '5 days', executeOn: `(now() - interval '1 day')::date` });
    await q(`UPDATE payments SET status = 'HELD' WHERE id = '${payment(9)}'`);

    expect(await migrate(db.url)).toEqual(later);
    const payees = await q(`SELECT id::text, let_through_at FROM payees ORDER BY id`);
    const times = await q(`SELECT
        (SELECT created_at FROM payments WHERE id = '${payment(1)}') AS first,
        (SELECT at FROM operator_actions WHERE target_id = '${payment(4)}') AS approved`);
    expect(payees.rows).toEqual([
      { id: payee(1), let_through_at: times.rows[0].first },
      { id: payee(2), let_through_at: null },
      { id: payee(3), let_through_at: times.rows[0].approved },
      { id: payee(4), let_through_at: null },
      { id: payee(5), let_through_at: null },
    ]);
    const held = await q(`SELECT id::text, held_at = created_at AS at_creation, held_at > now() - interval '1 minute' AS recent
      FROM payments WHERE status = 'HELD' ORDER BY id`);
    expect(held.rows).toEqual([
      { id: payment(8), at_creation: true, recent: true },
      { id: payment(9), at_creation: false, recent: true },
    ]);
    // From now on a HELD payment always says when it was held.
    await expect(q(`UPDATE payments SET held_at = NULL WHERE id = '${payment(8)}'`)).rejects.toMatchObject({ code: '23514' });
  });
});

describe('the double-entry migration', () => {
  const CUSTOMER = '00000000-0000-4000-8000-000000000001';
  const ACCOUNT = '00000000-0000-4000-8000-000000000002';
  const payment = (n: number) => `00000000-0000-4000-8000-0000000003${String(n).padStart(2, '0')}`;

  it('derives balanced opening postings from a database holding payments of every status and credits of every outcome', async () => {
    const db = await emptyDatabase();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const later = (await readMigrations()).map((m) => m.name).filter((name) => name >= '20261202082000_double_entry');
    for (const name of later) await rm(path.join(dir, name), { recursive: true });
    await migrate(db.url, dir);

    const q = (sql: string) => db.client.query(sql);
    await q(`INSERT INTO customers (id, name) VALUES ('${CUSTOMER}', 'Old')`);
    await q(`INSERT INTO accounts (id, customer_id, name, sort_code, account_number, balance)
      VALUES ('${ACCOUNT}', '${CUSTOMER}', 'Main', '608371', '12345678', 94500)`);
    let balance = 0;
    const entry = (kind: string, amount: number, extra: { payment?: number; key?: string; credit?: string } = {}) => {
      balance += amount;
      return q(`INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id, idempotency_key, provider_credit_id)
        VALUES ('${ACCOUNT}', '${kind}', ${amount}, ${balance}, ${extra.payment ? `'${payment(extra.payment)}'` : 'NULL'},
          ${extra.key ? `'${extra.key}'` : 'NULL'}, ${extra.credit ? `'${extra.credit}'` : 'NULL'})`);
    };
    const insert = (n: number, status: string, amount: number, executeOn = 'NULL') =>
      q(`INSERT INTO payments (id, account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code,
          recipient_account_number, status, held_at, execute_on)
        VALUES ('${payment(n)}', '${ACCOUNT}', 'k${n}', repeat('a', 64), ${amount}, 'R', '123456', '87654321', '${status}',
          ${status === 'HELD' ? 'now()' : 'NULL'}, ${executeOn})`);
    await entry('DEPOSIT', 100_000, { key: 'opening' });
    const statuses: Array<[string, number, string[]]> = [
      ['PENDING', 1_000, ['PAYMENT_DEBIT']],
      ['HELD', 2_000, ['PAYMENT_DEBIT']],
      ['COMPLETED', 3_000, ['PAYMENT_DEBIT']],
      ['CANCELLED', 4_000, ['PAYMENT_DEBIT', 'PAYMENT_REFUND']],
      ['FAILED', 5_000, ['PAYMENT_DEBIT', 'PAYMENT_REFUND']],
      ['RETURNED', 6_000, ['PAYMENT_DEBIT', 'PAYMENT_RETURN']],
    ];
    for (const [i, [status, amount, kinds]] of statuses.entries()) {
      await insert(i + 1, status, amount);
      for (const kind of kinds) await entry(kind, kind === 'PAYMENT_DEBIT' ? -amount : amount, { payment: i + 1 });
    }
    // Moved no money: a SCHEDULED payment, and one that failed for funds on its day.
    await insert(7, 'SCHEDULED', 7_000, `'2027-01-01'`);
    await insert(8, 'FAILED', 8_000, `'2026-11-01'`);
    const credit = (id: string, amount: number, outcome: string) =>
      q(`INSERT INTO provider_credits (id, amount, currency, recipient_sort_code, recipient_account_number, sender_name,
          sender_sort_code, sender_account_number, outcome, account_id, resolved_at)
        VALUES ('${id}', ${amount}, 'GBP', '608371', '12345678', 'S', '111111', '22222222', '${outcome}',
          ${outcome === 'CREDITED' ? `'${ACCOUNT}'` : 'NULL'}, ${outcome === 'RETURNING' ? 'NULL' : 'now()'})`);
    await credit('cr_in', 500, 'CREDITED');
    await entry('INBOUND_CREDIT', 500, { credit: 'cr_in' });
    await credit('cr_returning', 600, 'RETURNING');
    await credit('cr_returned', 700, 'RETURNED');
    expect(balance).toBe(94_500);

    expect(await migrate(db.url)).toEqual(later);
    const sums = await q(`SELECT coalesce(account_id::text, bank_account) AS account, sum(amount)::int AS balance
      FROM postings GROUP BY 1 ORDER BY 1`);
    expect(sums.rows).toEqual([
      { account: ACCOUNT, balance: 94_500 },
      { account: 'FUNDING', balance: -100_000 },
      { account: 'INBOUND_CLEARING', balance: 600 },
      // PENDING and HELD: accepted, not settled.
      { account: 'IN_TRANSIT', balance: 3_000 },
      // The COMPLETED payment out; every credit in (the returned one went on to RETURNS).
      { account: 'PROVIDER_SETTLEMENT', balance: 3_000 - 500 - 600 - 700 },
      { account: 'RETURNS', balance: 700 },
    ]);
    const unbalanced = await q(`SELECT transfer_id FROM postings GROUP BY transfer_id HAVING sum(amount) <> 0 OR count(*) <> 2`);
    expect(unbalanced.rows).toEqual([]);

    // The audit's checks of the books hold.
    const prisma = createPrisma({ databaseUrl: db.url, poolSize: 2, applicationName: 'migrate-test' });
    try {
      const books: Array<[string, string[]]> = [];
      await checkDoubleEntry(prisma, (name, _, violations) => books.push([name, violations]));
      expect(books).toHaveLength(4);
      expect(books).toEqual(books.map(([name]) => [name, []]));
    } finally {
      await prisma.$disconnect();
    }
    // The postings are append-only, like the ledger.
    await expect(q(`UPDATE postings SET amount = amount + 1`)).rejects.toThrow(/append-only \(UPDATE refused\)/);
    await expect(q(`DELETE FROM postings`)).rejects.toThrow(/append-only \(DELETE refused\)/);
  });
});
