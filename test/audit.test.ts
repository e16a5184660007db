import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { audit, formatAudit } from '../src/audit.ts';
import { addCalendarDays, londonToday, startOfLondonDay, systemClock } from '../src/calendar.ts';
import { gql, paymentInput, type Stack, startStack } from './helpers.ts';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
  const alice = await stack.newCustomer(10_000);
  const sent = await Promise.all([
    stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_000 })),
    stack.send(
      alice.token,
      paymentInput(alice.accountId, { amount: 2_000, recipient: { name: 'X', sortCode: '000000', accountNumber: '12345678' } }),
    ),
  ]);
  const ids = sent.map((s) => s.payment?.id ?? '');
  await vi.waitFor(async () => expect(await stack.db.payment.count({ where: { id: { in: ids }, status: 'PENDING' } })).toBe(0), {
    timeout: 20_000,
    interval: 100,
  });
});
afterAll(async () => {
  await stack?.stop();
});

const provider = () => ({ url: stack.emulator.url, apiKey: stack.config.providerApiKey });

/**
 * Runs `corrupt` as damage from outside the service would: with the database's transition guard off
 * for its one transaction (the guard refuses a status change the lifecycle does not have).
 */
const withoutTransitionGuard = (corrupt: ReturnType<Stack['db']['$executeRaw']>) =>
  stack.db.$transaction([
    stack.db.$executeRaw`ALTER TABLE payments DISABLE TRIGGER payments_guard_transition`,
    corrupt,
    stack.db.$executeRaw`ALTER TABLE payments ENABLE TRIGGER payments_guard_transition`,
  ]);
const failing = (report: Awaited<ReturnType<typeof audit>>) => report.checks.filter((c) => c.violations.length > 0).map((c) => c.name);

describe('the audit', () => {
  it('passes on a consistent bank', async () => {
    const report = await audit({ prisma: stack.db, provider: provider() });
    expect(failing(report)).toEqual([]);
    expect(report.checks).toHaveLength(24);
    expect(report.figures).toEqual([{ name: 'event horizon lag', value: expect.any(Number), unit: 's', threshold: 60 }]);
    expect(formatAudit(report)).toMatch(/^ +event horizon lag: \d+\.\d s \(flagged above 60 s\)$/m);
  });

  it('finds a balance that no longer matches its ledger', async () => {
    const bob = await stack.newCustomer(500);
    await stack.db.$executeRaw`UPDATE accounts SET balance = balance + 1 WHERE id = ${bob.accountId}::uuid`;
    try {
      // A balance changed behind the books' back: it no longer matches its entries, nor its postings.
      expect(failing(await audit({ prisma: stack.db }))).toEqual([
        'every balance equals the sum of its ledger',
        "every customer account's postings sum to its balance",
      ]);
    } finally {
      await stack.db.$executeRaw`UPDATE accounts SET balance = balance - 1 WHERE id = ${bob.accountId}::uuid`;
    }
  });

  it('finds a payment whose events do not retrace its status history', async () => {
    const completed = await stack.db.payment.findFirstOrThrow({ where: { status: 'COMPLETED' } });
    // An event claiming a change that never happened (events cannot be rewritten, only added).
    await stack.db.$executeRaw`INSERT INTO payment_events (payment_id, account_id, previous_status, status, amount)
      VALUES (${completed.id}::uuid, ${completed.accountId}::uuid, 'PENDING', 'FAILED', ${completed.amount})`;
    const report = await audit({ prisma: stack.db });
    expect(failing(report)).toEqual(['each payment has events that retrace its status history']);
    expect(report.checks.find((c) => c.violations.length > 0)?.violations).toEqual([
      `payment ${completed.id}: an event does not follow from the one before; last event FAILED, payment COMPLETED`,
    ]);
    await stack.db.$executeRaw`DELETE FROM payment_events WHERE payment_id = ${completed.id}::uuid AND status = 'FAILED'`;
  });

  it('finds an event the webhook dispatcher passed without a delivery, and a delivery no job will attempt', async () => {
    const carol = await stack.newCustomer(10_000);
    // An endpoint registered a minute ago that refuses connections: its deliveries stay PENDING, retrying.
    const [endpoint] = await stack.db.$queryRaw<{ id: string }[]>`
      INSERT INTO webhook_endpoints (id, account_id, url, secret_ciphertext, created_at)
      VALUES (gen_random_uuid(), ${carol.accountId}::uuid, 'http://127.0.0.1:9/hooks', decode('00', 'hex'), now() - interval '1 minute')
      RETURNING id::text AS id`;
    const endpointId = endpoint?.id ?? '';
    await stack.send(carol.token, paymentInput(carol.accountId, { amount: 1_000 }));
    const deliveries = await vi.waitFor(
      async () => {
        const rows = await stack.db.webhookDelivery.findMany({ where: { endpointId }, orderBy: { eventSeq: 'asc' } });
        expect(rows.length).toBeGreaterThanOrEqual(2);
        return rows;
      },
      { timeout: 20_000, interval: 100 },
    );
    expect(failing(await audit({ prisma: stack.db }))).toEqual([]);
    const [lost, orphaned] = deliveries;
    await stack.db.webhookDelivery.delete({ where: { id: lost?.id ?? '' } });
    await stack.db.$executeRaw`UPDATE webhook_deliveries SET job_id = gen_random_uuid() WHERE id = ${orphaned?.id ?? ''}::uuid`;
    const report = await audit({ prisma: stack.db });
    expect(failing(report)).toEqual([
      'every dispatched event has a webhook delivery for each endpoint its account had',
      'every PENDING webhook delivery has a live job and is within its retry window',
    ]);
    expect(report.checks.flatMap((c) => c.violations)).toEqual([
      `event ${lost?.eventSeq} to endpoint ${endpointId}`,
      `${orphaned?.id}: no live job`,
    ]);
    await stack.db.$executeRaw`UPDATE webhook_endpoints SET deleted_at = now() WHERE id = ${endpointId}::uuid`;
    await stack.db.$executeRaw`UPDATE webhook_deliveries SET status = 'FAILED', job_id = NULL WHERE endpoint_id = ${endpointId}::uuid`;
  });

  it('finds a refunded payment that the provider holds, and exits 1 from the command line', async () => {
    const cancelled = await stack.db.payment.findFirstOrThrow({ where: { status: 'CANCELLED' }, include: { account: true } });
    // Make the provider hold it (as if a cancelled payment had gone out after all).
    const response = await fetch(`${stack.emulator.url}/v1/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': stack.config.providerApiKey },
      body: JSON.stringify({
        idempotencyKey: cancelled.id,
        amount: Number(cancelled.amount),
        currency: 'GBP',
        sender: { name: 'A', sortCode: cancelled.account.sortCode, accountNumber: cancelled.account.accountNumber },
        recipient: { name: 'X', sortCode: '123456', accountNumber: '12345678' },
        reference: null,
      }),
    });
    expect(response.status).toBe(201);
    expect(failing(await audit({ prisma: stack.db, provider: provider() }))).toEqual([
      'every COMPLETED or RETURNED payment is at the provider exactly once, and no other one is',
    ]);

    const run = promisify(execFile);
    const result = await run(process.execPath, ['src/cli/audit.ts', '--provider', stack.emulator.url], {
      cwd: new URL('..', import.meta.url).pathname,
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: stack.databaseUrl, PROVIDER_API_KEY: stack.config.providerApiKey },
    }).then(
      () => ({ code: 0, stdout: '' }),
      (error: { code: number; stdout: string }) => error,
    );
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`payment ${cancelled.id} CANCELLED (never sent or refunded) but held by the provider`);
    expect(result.stdout).toContain('INVARIANTS VIOLATED');
  });

  it('flags a payment that has been PENDING for longer than an hour, or the threshold given', async () => {
    const alice = await stack.newCustomer(10_000);
    stack.emulator.setFaults({ errorRate: 1 });
    try {
      const sent = await stack.send(alice.token, paymentInput(alice.accountId));
      const id = sent.payment?.id ?? '';
      expect(failing(await audit({ prisma: stack.db }))).toEqual([]);
      expect(failing(await audit({ prisma: stack.db, pendingMaxAgeSeconds: 0 }))).toEqual(['no payment stays PENDING for long']);
      await stack.db.$executeRaw`UPDATE payments SET created_at = now() - interval '2 hours' WHERE id = ${id}::uuid`;
      const report = await audit({ prisma: stack.db });
      expect(report.checks.find((c) => c.name === 'no payment stays PENDING for long')?.violations).toEqual([
        expect.stringMatching(new RegExp(`^payment ${id} PENDING since .* \\(12\\d\\d? min\\)$`)),
      ]);
    } finally {
      stack.emulator.setFaults({ errorRate: 0 });
    }
  });

  it('finds a HELD payment that has a settlement job', async () => {
    const alice = await stack.newCustomer(10_000);
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 500 }));
    const id = sent.payment?.id ?? '';
    // As if a held payment had been put back on hold after its job was sent (it never is).
    await withoutTransitionGuard(
      stack.db.$executeRaw`UPDATE payments SET status = 'HELD', held_at = now() WHERE id = ${id}::uuid AND status <> 'HELD'`,
    );
    try {
      const report = await audit({ prisma: stack.db });
      expect(failing(report)).toContain('no HELD payment has a settlement job');
      expect(report.checks.find((c) => c.name === 'no HELD payment has a settlement job')?.violations).toEqual([
        `payment ${id} HELD with 1 settlement jobs`,
      ]);
    } finally {
      await withoutTransitionGuard(stack.db.$executeRaw`UPDATE payments SET status = 'COMPLETED' WHERE id = ${id}::uuid`);
    }
  });

  it("finds a customer's day past the daily limit, and a day total that is not its payments'", async () => {
    const alice = await stack.newCustomer(10_000);
    await stack.send(alice.token, paymentInput(alice.accountId, { amount: 700 }));
    const name = "no customer's London day passes the daily limit, and each day's total is its payments'";
    const hers = async (dailyLimit?: number) =>
      (await audit({ prisma: stack.db, ...(dailyLimit ? { dailyLimit } : {}) })).checks
        .find((c) => c.name === name)
        ?.violations.filter((v) => v.startsWith(`customer ${alice.customerId} `));
    expect(await hers(700)).toEqual([]);
    expect(await hers(699)).toEqual([expect.stringMatching(/ on \d{4}-\d\d-\d\d: payments 700, day total 700, limit 699$/)]);
    await stack.db.$executeRaw`UPDATE daily_payment_totals SET used = used - 1 WHERE customer_id = ${alice.customerId}::uuid`;
    try {
      expect(await hers()).toEqual([expect.stringMatching(/: payments 700, day total 699$/)]);
    } finally {
      await stack.db.$executeRaw`UPDATE daily_payment_totals SET used = used + 1 WHERE customer_id = ${alice.customerId}::uuid`;
    }
  });
});

describe('the audit of money movement', () => {
  it('finds a RETURNED payment without its return entry, a credit never credited and a standing-order occurrence missing', async () => {
    const completed = await stack.db.payment.findFirstOrThrow({ where: { status: 'COMPLETED' } });
    // (The test before left a payment PENDING for hours on purpose.)
    const baseline = failing(await audit({ prisma: stack.db }));
    const newly = (report: Awaited<ReturnType<typeof audit>>) => failing(report).filter((name) => !baseline.includes(name));
    // A return recorded on the payment with no money back.
    await stack.db.$executeRaw`UPDATE payments SET status = 'RETURNED', return_code = 'AC01' WHERE id = ${completed.id}::uuid`;
    // A credit whose ledger entry is missing.
    const account = await stack.db.account.findFirstOrThrow();
    await stack.db
      .$executeRaw`INSERT INTO provider_credits (id, amount, currency, recipient_sort_code, recipient_account_number, sender_name, sender_sort_code, sender_account_number, outcome, account_id)
      VALUES ('cr_audit', 500, 'GBP', ${account.sortCode}, ${account.accountNumber}, 'S', '401234', '87654321', 'CREDITED', ${account.id}::uuid)`;
    // A standing order that says it made one occurrence, with none there.
    await stack.db
      .$executeRaw`INSERT INTO standing_orders (account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code, recipient_account_number, frequency, first_payment_on, occurrences_created, next_payment_on)
      VALUES (${account.id}::uuid, 'audit-so', ${'f'.repeat(64)}, 100, 'R', '123456', '12345678', 'MONTHLY', '2027-01-31', 1, '2027-02-28')`;
    try {
      const report = await audit({ prisma: stack.db });
      expect(newly(report)).toEqual([
        'each payment has the ledger entries its status implies (a RETURNED one exactly one return entry)',
        'every provider credit is credited once or returned, never both',
        'every standing-order occurrence exists exactly once, on its date',
      ]);
      expect(report.checks[3]?.violations).toEqual([`payment ${completed.id} (RETURNED): 0 return entries`]);
      expect(report.checks[4]?.violations).toEqual(['credit cr_audit (CREDITED): credited 0 times']);
      expect(report.checks[5]?.violations).toEqual([expect.stringMatching(/occurrences none, expected 2027-01-31$/)]);
    } finally {
      await stack.db.$executeRaw`DELETE FROM standing_orders WHERE idempotency_key = 'audit-so'`;
      await stack.db.$executeRaw`DELETE FROM provider_credits WHERE id = 'cr_audit'`;
      await stack.db.$executeRaw`DELETE FROM payment_events WHERE payment_id = ${completed.id}::uuid AND status = 'RETURNED'`;
      await withoutTransitionGuard(
        stack.db.$executeRaw`UPDATE payments SET status = 'COMPLETED', return_code = NULL WHERE id = ${completed.id}::uuid`,
      );
      await stack.db.$executeRaw`DELETE FROM payment_events WHERE payment_id = ${completed.id}::uuid AND previous_status = 'RETURNED'`;
      // Leaving COMPLETED gave its amount back to its day (a trigger); coming back by hand takes it again.
      await stack.db.$executeRaw`UPDATE daily_payment_totals t SET used = t.used + p.amount
        FROM payments p JOIN accounts a ON a.id = p.account_id
        WHERE p.id = ${completed.id}::uuid AND t.customer_id = a.customer_id AND t.day = p.limit_day`;
    }
    expect(newly(await audit({ prisma: stack.db }))).toEqual([]);
  });
});

describe('the audit of its blind spots', () => {
  const LEDGER = 'each payment has the ledger entries its status implies (a RETURNED one exactly one return entry)';

  it('finds money sent back to another account than the one it was taken from, though every balance adds up', async () => {
    const payer = await stack.newCustomer(10_000);
    const mallory = await stack.newCustomer(500);
    const sent = await stack.send(payer.token, paymentInput(payer.accountId, { amount: 1_000 }));
    const id = sent.payment?.id ?? '';
    await vi.waitFor(async () => expect((await stack.db.payment.findUniqueOrThrow({ where: { id } })).status).toBe('COMPLETED'), {
      timeout: 20_000,
      interval: 100,
    });
    const baseline = failing(await audit({ prisma: stack.db }));
    // A return booked to Mallory's account, with her balance and its ledger kept in step: every
    // balance, ledger chain and entry count still agrees.
    await stack.db.$transaction([
      stack.db.$executeRaw`UPDATE payments SET status = 'RETURNED', return_code = 'AC01' WHERE id = ${id}::uuid`,
      stack.db.$executeRaw`INSERT INTO ledger_entries (account_id, kind, amount, balance_after, payment_id)
        SELECT a.id, 'PAYMENT_RETURN', 1000, a.balance + 1000, ${id}::uuid FROM accounts a WHERE a.id = ${mallory.accountId}::uuid`,
      stack.db.$executeRaw`UPDATE accounts SET balance = balance + 1000 WHERE id = ${mallory.accountId}::uuid`,
    ]);
    try {
      const report = await audit({ prisma: stack.db });
      // The double-entry books see it too: no posting moved the money to Mallory.
      expect(failing(report).filter((name) => !baseline.includes(name))).toEqual([
        LEDGER,
        "every customer account's postings sum to its balance",
      ]);
      expect(report.checks.find((c) => c.name === LEDGER)?.violations).toContain(
        `payment ${id} (RETURNED): money back to another account than the debit's`,
      );
    } finally {
      await stack.db.$transaction([
        stack.db.$executeRaw`ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only`,
        stack.db.$executeRaw`DELETE FROM ledger_entries WHERE payment_id = ${id}::uuid AND kind = 'PAYMENT_RETURN'`,
        stack.db.$executeRaw`ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only`,
        stack.db.$executeRaw`UPDATE accounts SET balance = balance - 1000 WHERE id = ${mallory.accountId}::uuid`,
        stack.db.$executeRaw`ALTER TABLE payments DISABLE TRIGGER payments_guard_transition`,
        stack.db.$executeRaw`UPDATE payments SET status = 'COMPLETED', return_code = NULL WHERE id = ${id}::uuid`,
        stack.db.$executeRaw`ALTER TABLE payments ENABLE TRIGGER payments_guard_transition`,
        stack.db
          .$executeRaw`DELETE FROM payment_events WHERE payment_id = ${id}::uuid AND (status = 'RETURNED' OR previous_status = 'RETURNED')`,
        // Leaving COMPLETED gave its amount back to its day (a trigger); coming back by hand takes it again.
        stack.db.$executeRaw`UPDATE daily_payment_totals t SET used = t.used + p.amount
          FROM payments p JOIN accounts a ON a.id = p.account_id
          WHERE p.id = ${id}::uuid AND t.customer_id = a.customer_id AND t.day = p.limit_day`,
      ]);
    }
    expect(failing(await audit({ prisma: stack.db })).filter((name) => !baseline.includes(name))).toEqual([]);
  });

  it('finds a SCHEDULED payment left a day past its day, and not one whose day is today', async () => {
    const name = 'no SCHEDULED payment is left past its day';
    const payer = await stack.newCustomer(10_000);
    const today = londonToday(systemClock);
    const sent = await stack.send(payer.token, paymentInput(payer.accountId, { amount: 100, executeOn: addCalendarDays(today, 5) }));
    const id = sent.payment?.id ?? '';
    expect(sent.payment?.status).toBe('SCHEDULED');
    const violations = async (options: { scheduledGraceSeconds?: number } = {}) =>
      (await audit({ prisma: stack.db, ...options })).checks.find((c) => c.name === name)?.violations.filter((v) => v.includes(id));
    expect(await violations()).toEqual([]);
    try {
      // As if its execution job had been lost: still SCHEDULED three days after its day.
      const late = addCalendarDays(today, -3);
      await stack.db.$executeRaw`UPDATE payments SET execute_on = ${late}::date WHERE id = ${id}::uuid`;
      expect(await violations()).toEqual([`payment ${id} SCHEDULED for ${late}, still not run`]);
      // Due today: its job runs at the start of the day, within the grace.
      await stack.db.$executeRaw`UPDATE payments SET execute_on = ${today}::date WHERE id = ${id}::uuid`;
      expect(await violations()).toEqual([]);
      expect(await violations({ scheduledGraceSeconds: 0 })).toEqual([`payment ${id} SCHEDULED for ${today}, still not run`]);
    } finally {
      await stack.db.$executeRaw`UPDATE payments SET execute_on = ${addCalendarDays(today, 5)}::date WHERE id = ${id}::uuid`;
    }
  });

  it('reports how long the oldest transaction on the cluster has held the event horizon, and flags it over the threshold', async () => {
    const name = 'no transaction holds the event horizon back for long';
    // A transaction that holds an xid, in another database of the same cluster.
    const other = new pg.Client({ connectionString: inject('adminUrl'), application_name: 'audit-test-holder' });
    await other.connect();
    try {
      await other.query('BEGIN');
      const [held] = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid, txid_current()')).rows;
      const pid = held?.pid ?? 0;
      const report = await audit({ prisma: stack.db, horizonLagMaxSeconds: 0 });
      expect(report.figures.find((f) => f.name === 'event horizon lag')?.value).toBeGreaterThan(0);
      const flagged = report.checks.find((c) => c.name === name);
      expect(flagged?.checked).toBeGreaterThanOrEqual(1);
      expect(flagged?.violations).toContainEqual(
        expect.stringMatching(
          new RegExp(
            `^pid ${pid} \\(database \\w+, application audit-test-holder, idle in transaction\\) has held an xid for \\d+\\.\\d s, since `,
          ),
        ),
      );
      // Under the default threshold (a minute) it is a figure, not a violation.
      const quiet = await audit({ prisma: stack.db });
      expect(quiet.checks.find((c) => c.name === name)?.violations.filter((v) => v.startsWith(`pid ${pid} `))).toEqual([]);
      await other.query('ROLLBACK');
      const after = await audit({ prisma: stack.db, horizonLagMaxSeconds: 0 });
      expect(after.checks.find((c) => c.name === name)?.violations.filter((v) => v.startsWith(`pid ${pid} `))).toEqual([]);
    } finally {
      await other.end();
    }
  });
});

describe('the audit of holds, payees and standing orders', () => {
  const HOLDS = 'every HELD payment has at most one decision, the one its history shows (approved, rejected, expired, or none)';
  const LET_THROUGH = "every payee's let-through is recorded exactly when a payment to it was approved or taken without a hold";
  const OWED = 'every due standing-order occurrence was made, and a cancelled order has none waiting';
  const violationsOf = (report: Awaited<ReturnType<typeof audit>>, name: string) => report.checks.find((c) => c.name === name)?.violations;
  /** Removes operator actions a test wrote by hand (the log is append-only for the service). */
  const unlog = (id: string) =>
    stack.db.$transaction([
      stack.db.$executeRaw`ALTER TABLE operator_actions DISABLE TRIGGER operator_actions_append_only`,
      stack.db.$executeRaw`DELETE FROM operator_actions WHERE target_id = ${id}::uuid AND operator = 'operator:forged'`,
      stack.db.$executeRaw`ALTER TABLE operator_actions ENABLE TRIGGER operator_actions_append_only`,
    ]);

  it("finds a hold decision its payment's history does not show, and a let-through with no payment behind it or missing", async () => {
    const payer = await stack.newCustomer(10_000);
    const recipient = { name: 'Ada Lovelace', sortCode: '203040', accountNumber: '11112222' };
    const added = await gql<{ addPayee: { id: string } }>(
      stack.apiUrl,
      payer.token,
      'mutation($i: RecipientInput!) { addPayee(input: $i) { id } }',
      { i: recipient },
    );
    const payeeId = added.data?.addPayee.id ?? '';
    // The first payment to a payee saved a moment ago is held.
    const sent = await stack.send(payer.token, paymentInput(payer.accountId, { amount: 300, recipient }));
    const id = sent.payment?.id ?? '';
    expect(sent.payment?.status).toBe('HELD');
    const never = await stack.send(payer.token, paymentInput(payer.accountId, { amount: 100 }));
    const neverHeld = never.payment?.id ?? '';
    expect(violationsOf(await audit({ prisma: stack.db }), HOLDS)).toEqual([]);

    // An expiry logged while the payment is still HELD, and an approval of one never held.
    await stack.db
      .$executeRaw`INSERT INTO operator_actions (operator, action, target_id) VALUES ('operator:forged', 'expireHold', ${id}::uuid)`;
    await stack.db
      .$executeRaw`INSERT INTO operator_actions (operator, action, target_id) VALUES ('operator:forged', 'approvePayment', ${neverHeld}::uuid)`;
    try {
      expect(violationsOf(await audit({ prisma: stack.db }), HOLDS)).toEqual(
        expect.arrayContaining([
          `payment ${id}: expired 1 times, failure none`,
          `payment ${neverHeld}: a hold decision, but never HELD; approved, but never left HELD for PENDING`,
        ]),
      );
    } finally {
      await unlog(id);
      await unlog(neverHeld);
    }

    // The operator approves it: one decision, the payee let through.
    const approved = await gql(stack.apiUrl, stack.operatorToken, 'mutation($id: ID!) { approvePayment(paymentId: $id) { id } }', { id });
    expect(approved.errors).toBeUndefined();
    const report = await audit({ prisma: stack.db });
    expect(violationsOf(report, HOLDS)).toEqual([]);
    expect(violationsOf(report, LET_THROUGH)).toEqual([]);

    // Its let-through lost: within the margin a payment screened before the payee was saved is
    // allowed for; past it, it is flagged.
    await stack.db.$executeRaw`UPDATE payees SET let_through_at = NULL WHERE id = ${payeeId}::uuid`;
    expect(violationsOf(await audit({ prisma: stack.db }), LET_THROUGH)).toEqual([]);
    expect(violationsOf(await audit({ prisma: stack.db, letThroughMarginSeconds: 0 }), LET_THROUGH)).toEqual([
      `payee ${payeeId}: a payment to it was approved or taken without a hold, but it is not let through`,
    ]);
    // A payee let through with no payment to it at all.
    const other = await gql<{ addPayee: { id: string } }>(
      stack.apiUrl,
      payer.token,
      'mutation($i: RecipientInput!) { addPayee(input: $i) { id } }',
      {
        i: { name: 'Alan Turing', sortCode: '203040', accountNumber: '33334444' },
      },
    );
    const otherId = other.data?.addPayee.id ?? '';
    await stack.db.$executeRaw`UPDATE payees SET let_through_at = now() WHERE id = ${otherId}::uuid`;
    try {
      expect(violationsOf(await audit({ prisma: stack.db }), LET_THROUGH)).toEqual([
        `payee ${otherId}: let through, but no payment to it was approved or taken without a hold`,
      ]);
    } finally {
      await stack.db.$executeRaw`UPDATE payees SET let_through_at = NULL WHERE id = ${otherId}::uuid`;
      await stack.db.$executeRaw`UPDATE payees SET let_through_at = now() WHERE id = ${payeeId}::uuid`;
    }
    expect(violationsOf(await audit({ prisma: stack.db, letThroughMarginSeconds: 0 }), LET_THROUGH)).toEqual([]);
  });

  it('finds a standing-order occurrence owed since a past day, and a cancelled order with an occurrence still waiting', async () => {
    const payer = await stack.newCustomer(10_000);
    const today = londonToday(systemClock);
    // Due tomorrow, so the worker's scheduler leaves it alone; the audit is told it is tomorrow.
    const tomorrow = addCalendarDays(today, 1);
    const [owed] = await stack.db.$queryRaw<{ id: string }[]>`
      INSERT INTO standing_orders (account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code, recipient_account_number, frequency, first_payment_on, next_payment_on)
      VALUES (${payer.accountId}::uuid, 'audit-owed', ${'f'.repeat(64)}, 100, 'R', '123456', '12345678', 'WEEKLY', ${tomorrow}::date, ${tomorrow}::date)
      RETURNING id::text`;
    const [cancelled] = await stack.db.$queryRaw<{ id: string }[]>`
      INSERT INTO standing_orders (account_id, idempotency_key, fingerprint, amount, recipient_name, recipient_sort_code, recipient_account_number, frequency, first_payment_on, active, cancelled_at)
      VALUES (${payer.accountId}::uuid, 'audit-cancelled', ${'f'.repeat(64)}, 100, 'R', '123456', '12345678', 'WEEKLY', ${today}::date, false, now())
      RETURNING id::text`;
    const sent = await stack.send(payer.token, paymentInput(payer.accountId, { amount: 100, executeOn: addCalendarDays(today, 3) }));
    const waiting = sent.payment?.id ?? '';
    expect(sent.payment?.status).toBe('SCHEDULED');
    // As if it were the cancelled order's occurrence, left SCHEDULED by the cancellation.
    await stack.db.$executeRaw`UPDATE payments SET standing_order_id = ${cancelled?.id}::uuid WHERE id = ${waiting}::uuid`;
    try {
      // Tomorrow's occurrence is owed tomorrow once its day's grace has passed; with none, at once.
      const onItsDay = { now: () => new Date(startOfLondonDay(tomorrow).getTime() + 3600_000) };
      expect(violationsOf(await audit({ prisma: stack.db }), OWED)).toEqual([
        `standing order ${cancelled?.id} cancelled, but its occurrence ${waiting} is still SCHEDULED`,
      ]);
      expect(violationsOf(await audit({ prisma: stack.db, clock: onItsDay }), OWED)).toHaveLength(1);
      expect(violationsOf(await audit({ prisma: stack.db, clock: onItsDay, scheduledGraceSeconds: 0 }), OWED)).toEqual([
        `standing order ${owed?.id}: occurrence of ${tomorrow} not made`,
        `standing order ${cancelled?.id} cancelled, but its occurrence ${waiting} is still SCHEDULED`,
      ]);
    } finally {
      await stack.db.$executeRaw`UPDATE payments SET standing_order_id = NULL WHERE id = ${waiting}::uuid`;
      await stack.db.$executeRaw`DELETE FROM standing_orders WHERE idempotency_key IN ('audit-owed', 'audit-cancelled')`;
    }
    expect(violationsOf(await audit({ prisma: stack.db, scheduledGraceSeconds: 0 }), OWED)).toEqual([]);
  });
});
