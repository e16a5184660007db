import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { audit, formatAudit } from '../src/audit.ts';
import { addCalendarDays, londonToday, systemClock } from '../src/calendar.ts';
import { enqueueReconciliation } from '../src/jobs/enqueue.ts';
import { emulatorCall, gql, paymentInput, type Stack, startStack, TEST_OPERATOR, type TestCustomer } from './helpers.ts';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.stop();
});

const status = async (id: string) => (await stack.db.payment.findUniqueOrThrow({ where: { id } })).status;
const settled = (id: string, expected = 'COMPLETED') =>
  vi.waitFor(async () => expect(await status(id)).toBe(expected), { timeout: 20_000, interval: 100 });

const BALANCES = /* GraphQL */ `
  query($id: ID!) { account(id: $id) { balance availableBalance ledgerBalance pendingOutgoing } }
`;
type BalancesData = { account: { balance: number; availableBalance: number; ledgerBalance: number; pendingOutgoing: number } };
const balancesOf = async (customer: TestCustomer) =>
  (await gql<BalancesData>(stack.apiUrl, customer.token, BALANCES, { id: customer.accountId })).data?.account;

const postingsOf = (paymentId: string) =>
  stack.db.$queryRaw<{ kind: string; account: string; amount: bigint }[]>`
    SELECT kind, coalesce(CASE WHEN account_id IS NOT NULL THEN 'customer' END, bank_account) AS account, amount
    FROM postings WHERE payment_id = ${paymentId}::uuid ORDER BY id`;

describe('double entry', () => {
  it('moves a payment customer -> in transit -> provider settlement, and a refund back from in transit, each transfer summing to zero', async () => {
    const alice = await stack.newCustomer(10_000);
    const paid = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_200 }));
    const rejected = await stack.send(
      alice.token,
      paymentInput(alice.accountId, { amount: 700, recipient: { name: 'X', sortCode: '000000', accountNumber: '12345678' } }),
    );
    await settled(paid.payment?.id ?? '');
    await settled(rejected.payment?.id ?? '', 'CANCELLED');
    expect(await postingsOf(paid.payment?.id ?? '')).toEqual([
      { kind: 'PAYMENT_DEBIT', account: 'customer', amount: -1_200n },
      { kind: 'PAYMENT_DEBIT', account: 'IN_TRANSIT', amount: 1_200n },
      { kind: 'PAYMENT_SETTLED', account: 'IN_TRANSIT', amount: -1_200n },
      { kind: 'PAYMENT_SETTLED', account: 'PROVIDER_SETTLEMENT', amount: 1_200n },
    ]);
    expect(await postingsOf(rejected.payment?.id ?? '')).toEqual([
      { kind: 'PAYMENT_DEBIT', account: 'customer', amount: -700n },
      { kind: 'PAYMENT_DEBIT', account: 'IN_TRANSIT', amount: 700n },
      { kind: 'PAYMENT_REFUND', account: 'IN_TRANSIT', amount: -700n },
      { kind: 'PAYMENT_REFUND', account: 'customer', amount: 700n },
    ]);
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
    expect(report.checks.map((c) => c.name)).toContain(
      'trial balance: every transfer sums to zero, and so do all ledger accounts together',
    );
  });

  it('refuses to rewrite or delete a posting', async () => {
    // A deposit writes postings of its own, so the statements below have rows to refuse.
    await stack.newCustomer(100);
    await expect(stack.db.$executeRaw`UPDATE postings SET amount = amount + 1`).rejects.toThrow(/append-only \(UPDATE refused\)/);
    await expect(stack.db.$executeRaw`DELETE FROM postings`).rejects.toThrow(/append-only \(DELETE refused\)/);
  });
});

describe('balances', () => {
  it('counts a pending payment against available but in the ledger balance until it leaves, from one snapshot', async () => {
    const bob = await stack.newCustomer(10_000);
    // The provider holds the payment unanswered: it stays PENDING while we look.
    const input = paymentInput(bob.accountId, { amount: 2_500 });
    await emulatorCall(stack, 'PUT', '/admin/faults', { stallKeys: ['*'] });
    try {
      const sent = await stack.send(bob.token, input);
      expect(sent.payment?.status).toBe('PENDING');
      expect(await balancesOf(bob)).toEqual({ balance: 7_500, availableBalance: 7_500, ledgerBalance: 10_000, pendingOutgoing: 2_500 });
    } finally {
      await emulatorCall(stack, 'PUT', '/admin/faults', {});
    }
    const id = (await stack.db.payment.findFirstOrThrow({ where: { idempotencyKey: input.idempotencyKey } })).id;
    await settled(id);
    expect(await balancesOf(bob)).toEqual({ balance: 7_500, availableBalance: 7_500, ledgerBalance: 7_500, pendingOutgoing: 0 });
  });

  it('gives the balances at any instant exactly, from the entries and the money in transit', async () => {
    const carol = await stack.newCustomer(10_000);
    const sent = await stack.send(carol.token, paymentInput(carol.accountId, { amount: 4_000 }));
    const id = sent.payment?.id ?? '';
    await settled(id);
    const [deposit, debit] = await stack.db.ledgerEntry.findMany({ where: { accountId: carol.accountId }, orderBy: { id: 'asc' } });
    const [settledAt] = await stack.db.$queryRaw<{ at: Date }[]>`
      SELECT created_at AS at FROM postings WHERE payment_id = ${id}::uuid AND kind = 'PAYMENT_SETTLED' LIMIT 1`;
    if (!deposit || !debit || !settledAt) throw new Error('expected a deposit, a debit and a settlement');
    const at = async (t: Date) =>
      (
        await gql<{ account: { balanceAt: { at: string; availableBalance: number; ledgerBalance: number } } }>(
          stack.apiUrl,
          carol.token,
          'query($id: ID!, $at: DateTime!) { account(id: $id) { balanceAt(at: $at) { at availableBalance ledgerBalance } } }',
          { id: carol.accountId, at: t.toISOString() },
        )
      ).data?.account.balanceAt;
    const ms = (d: Date, delta: number) => new Date(d.getTime() + delta);
    expect(await at(ms(deposit.createdAt, -1))).toMatchObject({ availableBalance: 0, ledgerBalance: 0 });
    expect(await at(deposit.createdAt)).toMatchObject({ availableBalance: 10_000, ledgerBalance: 10_000 });
    if (debit.createdAt.getTime() > deposit.createdAt.getTime()) {
      expect(await at(ms(debit.createdAt, -1))).toMatchObject({ availableBalance: 10_000, ledgerBalance: 10_000 });
    }
    // Debited, not yet executed: it still counts in the ledger balance.
    if (settledAt.at.getTime() > debit.createdAt.getTime()) {
      expect(await at(debit.createdAt)).toMatchObject({ availableBalance: 6_000, ledgerBalance: 10_000 });
      expect(await at(ms(settledAt.at, -1))).toMatchObject({ availableBalance: 6_000, ledgerBalance: 10_000 });
    }
    expect(await at(settledAt.at)).toEqual({ at: settledAt.at.toISOString(), availableBalance: 6_000, ledgerBalance: 6_000 });
  });
});

const STATEMENT = /* GraphQL */ `
  query($id: ID!, $from: Date!, $to: Date!, $first: Int, $after: String) {
    account(id: $id) {
      statement(from: $from, to: $to, first: $first, after: $after) {
        from to openingBalance closingBalance moneyIn moneyOut
        entries {
          edges { cursor node { at kind amount runningBalance reference counterparty { name sortCode accountNumber } payment { id } } }
          pageInfo { hasNextPage endCursor }
        }
      }
    }
  }
`;
interface StatementData {
  account: {
    statement: {
      from: string;
      to: string;
      openingBalance: number;
      closingBalance: number;
      moneyIn: number;
      moneyOut: number;
      entries: {
        edges: Array<{
          cursor: string;
          node: { at: string; kind: string; amount: number; runningBalance: number; reference: string | null };
        }>;
        pageInfo: { hasNextPage: boolean; endCursor: string | null };
      };
    };
  } | null;
}

describe('statements', () => {
  let dave: TestCustomer;
  /**
   * Entries at explicit instants around the start of British Summer Time (29 March 2026: London
   * midnight that day is 00:00Z, the next one 23:00Z), each with the balance it left. Written
   * straight into the ledger (the service stamps entries with the database's clock), so this
   * account's books have no postings: no audit runs after this block.
   */
  const entries: Array<[string, number]> = [
    ['2026-03-27T12:00:00.000Z', 10_000],
    ['2026-03-28T23:30:00.000Z', -1_000], // London 28 March 23:30 (GMT)
    ['2026-03-29T00:30:00.000Z', 2_500], // London 29 March 00:30 (GMT)
    ['2026-03-29T22:30:00.000Z', -500], // London 29 March 23:30 (BST)
    ['2026-03-29T23:30:00.000Z', -300], // London 30 March 00:30 (BST)
  ];
  beforeAll(async () => {
    dave = await stack.newCustomer(0);
    let balance = 0;
    for (const [at, amount] of entries) {
      balance += amount;
      await stack.db.$executeRaw`
        INSERT INTO ledger_entries (account_id, kind, amount, balance_after, idempotency_key, reference, created_at)
        VALUES (${dave.accountId}::uuid, ${amount > 0 ? 'DEPOSIT' : 'PAYMENT_DEBIT'}::"LedgerEntryKind", ${amount}, ${balance},
          ${amount > 0 ? at : null}, ${`ref ${at.slice(0, 16)}`}, ${at}::timestamptz)`;
    }
    await stack.db.$executeRaw`UPDATE accounts SET balance = ${balance} WHERE id = ${dave.accountId}::uuid`;
  });
  const statement = async (from: string, to: string, page: { first?: number; after?: string } = {}, token = dave.token) =>
    gql<StatementData>(stack.apiUrl, token, STATEMENT, { id: dave.accountId, from, to, ...page });
  const holds = (s: { openingBalance: number; moneyIn: number; moneyOut: number; closingBalance: number }) =>
    expect(s.openingBalance + s.moneyIn - s.moneyOut).toBe(s.closingBalance);

  it('covers the London day across the start of summer time: 23 hours, from 00:00Z to 23:00Z', async () => {
    const s = (await statement('2026-03-29', '2026-03-29')).data?.account?.statement;
    if (!s) throw new Error('no statement');
    expect(s).toMatchObject({
      from: '2026-03-29',
      to: '2026-03-29',
      openingBalance: 9_000,
      closingBalance: 11_000,
      moneyIn: 2_500,
      moneyOut: 500,
    });
    expect(s.entries.edges.map((e) => [e.node.at, e.node.kind, e.node.amount, e.node.runningBalance])).toEqual([
      ['2026-03-29T00:30:00.000Z', 'DEPOSIT', 2_500, 11_500],
      ['2026-03-29T22:30:00.000Z', 'PAYMENT_DEBIT', -500, 11_000],
    ]);
    expect(s.entries.edges[0]?.node.reference).toBe('ref 2026-03-29T00:30');
    holds(s);
    // The day before ends at 00:00Z (GMT); the day after begins at 23:00Z (BST).
    const before = (await statement('2026-03-28', '2026-03-28')).data?.account?.statement;
    const after = (await statement('2026-03-30', '2026-03-30')).data?.account?.statement;
    expect(before).toMatchObject({ openingBalance: 10_000, closingBalance: 9_000, moneyIn: 0, moneyOut: 1_000 });
    expect(after).toMatchObject({ openingBalance: 11_000, closingBalance: 10_700, moneyIn: 0, moneyOut: 300 });
    for (const x of [before, after]) if (x) holds(x);
  });

  it('has an opening balance equal to its closing balance on a day with no entries', async () => {
    const s = (await statement('2026-03-31', '2026-03-31')).data?.account?.statement;
    expect(s).toMatchObject({ openingBalance: 10_700, closingBalance: 10_700, moneyIn: 0, moneyOut: 0 });
    expect(s?.entries.edges).toEqual([]);
    // Before the account had any entry: zero, not nothing.
    expect((await statement('2026-01-01', '2026-01-01')).data?.account?.statement).toMatchObject({ openingBalance: 0, closingBalance: 0 });
  });

  it('pages through a range oldest first, and its totals are those of the whole range', async () => {
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const s = (await statement('2026-03-01', '2026-03-31', { first: 2, ...(after ? { after } : {}) })).data?.account?.statement;
      if (!s) throw new Error('no statement');
      expect(s).toMatchObject({ openingBalance: 0, closingBalance: 10_700, moneyIn: 12_500, moneyOut: 1_800 });
      holds(s);
      seen.push(...s.entries.edges.map((e) => e.node.at));
      if (!s.entries.pageInfo.hasNextPage) break;
      after = s.entries.pageInfo.endCursor ?? undefined;
    }
    expect(seen).toEqual(entries.map(([at]) => at));
  });

  it('refuses a range backwards or longer than 366 days, naming the argument', async () => {
    const backwards = await statement('2026-03-02', '2026-03-01');
    expect(backwards.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: ['to'] });
    // 367 days is one too many; 366 (30 March to 30 March) is a statement.
    expect((await statement('2025-03-29', '2026-03-30')).errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: ['to'] });
    expect((await statement('2025-03-30', '2026-03-30')).errors).toBeUndefined();
    expect((await statement('2026-02-30', '2026-03-01')).errors?.[0]?.extensions).toMatchObject({ field: ['from'] });
  });

  it('is served as CSV with the customer token, to nobody else', async () => {
    const url = (id: string) => `${stack.apiUrl.replace(/\/graphql$/, '')}/accounts/${id}/statement.csv?from=2026-03-29&to=2026-03-30`;
    const response = await fetch(url(dave.accountId), { headers: { authorization: `Bearer ${dave.token}` } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/csv/);
    expect((await response.text()).split('\r\n')).toEqual([
      'date,at,kind,amount,running_balance,counterparty_name,counterparty_sort_code,counterparty_account_number,reference,payment_id',
      '2026-03-29,2026-03-29T00:30:00.000Z,DEPOSIT,2500,11500,,,,ref 2026-03-29T00:30,',
      '2026-03-29,2026-03-29T22:30:00.000Z,PAYMENT_DEBIT,-500,11000,,,,ref 2026-03-29T22:30,',
      '2026-03-30,2026-03-29T23:30:00.000Z,PAYMENT_DEBIT,-300,10700,,,,ref 2026-03-29T23:30,',
      '',
    ]);
    expect((await fetch(url(dave.accountId))).status).toBe(401);
    const eve = await stack.newCustomer(0);
    expect((await fetch(url(dave.accountId), { headers: { authorization: `Bearer ${eve.token}` } })).status).toBe(404);
    const bad = await fetch(url(dave.accountId).replace('from=2026-03-29', 'from=yesterday'), {
      headers: { authorization: `Bearer ${dave.token}` },
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT', field: ['from'] } }] });
  });
});

const RECONCILE = /* GraphQL */ `
  mutation($date: Date!) { reconcile(date: $date) { id date kind paymentId providerReference ours theirs resolvedAt } }
`;
interface Break {
  id: string;
  date: string;
  kind: string;
  paymentId: string | null;
  providerReference: string;
  ours: number | null;
  theirs: number | null;
  resolvedAt: string | null;
}

describe('reconciliation with the provider', () => {
  const today = londonToday(systemClock);
  const reconcile = async () => {
    const answer = await gql<{ reconcile: Break[] }>(stack.apiUrl, stack.operatorToken, RECONCILE, { date: today });
    if (!answer.data) throw new Error(JSON.stringify(answer.errors));
    return answer.data.reconcile;
  };
  const breaksMetric = async () => (await stack.api.metrics.registry.getSingleMetricAsString('payments_reconciliation_breaks_total')) ?? '';

  it('finds no break on a clean day, then each injected kind of break, once, and an operator resolves one', async () => {
    const frank = await stack.newCustomer(50_000);
    const ids: string[] = [];
    for (const amount of [1_000, 2_000, 3_000]) {
      const sent = await stack.send(frank.token, paymentInput(frank.accountId, { amount }));
      ids.push(sent.payment?.id ?? '');
    }
    for (const id of ids) await settled(id);
    const [returned, mismatched, leftOff] = ids as [string, string, string];
    // A return and an inbound credit, applied here from the provider's feed.
    await emulatorCall(stack, 'POST', `/admin/payments/${returned}/return`, { returnCode: 'AC01' });
    const account = await stack.db.account.findUniqueOrThrow({ where: { id: frank.accountId } });
    await emulatorCall(stack, 'POST', '/admin/credits', {
      amount: 750,
      recipient: { sortCode: account.sortCode, accountNumber: account.accountNumber },
      sender: { name: 'Payer', sortCode: '401234', accountNumber: '87654321' },
      reference: 'Rent',
    });
    await settled(returned, 'RETURNED');
    await vi.waitFor(async () => expect(await stack.db.providerCredit.count({ where: { accountId: frank.accountId } })).toBe(1), {
      timeout: 20_000,
      interval: 100,
    });
    const report = await emulatorCall(stack, 'GET', `/v1/reports/settlement?date=${today}`);
    expect(report.json).toMatchObject({ date: today });
    expect((report.json as { items: unknown[] }).items).toEqual(
      expect.arrayContaining([
        { type: 'payment', reference: returned, amount: 1_000 },
        { type: 'return', reference: returned, amount: 1_000 },
        { type: 'credit', reference: expect.stringMatching(/^cr_/), amount: 750 },
      ]),
    );

    expect(await reconcile()).toEqual([]);

    const inject = (body: Record<string, unknown>) => emulatorCall(stack, 'POST', '/admin/reports/breaks', { date: today, ...body });
    expect((await inject({ kind: 'MISSING_OURS', reference: 'not-ours-1', amount: 999 })).status).toBe(201);
    expect((await inject({ kind: 'MISSING_THEIRS', reference: leftOff })).status).toBe(201);
    expect((await inject({ kind: 'AMOUNT_MISMATCH', reference: mismatched, amount: 2_001 })).status).toBe(201);
    const found = await reconcile();
    expect(
      found.map(({ kind, providerReference, paymentId, ours, theirs }) => ({ kind, providerReference, paymentId, ours, theirs })),
    ).toEqual(
      expect.arrayContaining([
        { kind: 'MISSING_OURS', providerReference: 'not-ours-1', paymentId: null, ours: null, theirs: 999 },
        { kind: 'MISSING_THEIRS', providerReference: leftOff, paymentId: leftOff, ours: 3_000, theirs: null },
        { kind: 'AMOUNT_MISMATCH', providerReference: mismatched, paymentId: mismatched, ours: 2_000, theirs: 2_001 },
      ]),
    );
    expect(found).toHaveLength(3);
    // Each is recorded and counted once, however often the day is reconciled.
    expect((await reconcile()).map((b) => b.id).sort()).toEqual(found.map((b) => b.id).sort());
    const metric = await breaksMetric();
    for (const kind of ['MISSING_OURS', 'MISSING_THEIRS', 'AMOUNT_MISMATCH'])
      expect(metric).toContain(`payments_reconciliation_breaks_total{kind="${kind}"} 1`);

    const target = found.find((b) => b.kind === 'AMOUNT_MISMATCH');
    const resolve = (id: string, note: string) =>
      gql<{ resolveReconciliationBreak: Break }>(
        stack.apiUrl,
        stack.operatorToken,
        'mutation($id: ID!, $note: String!) { resolveReconciliationBreak(id: $id, note: $note) { id kind resolvedAt } }',
        { id, note },
      );
    expect((await resolve(target?.id ?? '', '')).errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: ['note'] });
    const resolved = (await resolve(target?.id ?? '', 'provider confirmed a fee of 1p')).data?.resolveReconciliationBreak;
    expect(resolved?.resolvedAt).toEqual(expect.any(String));
    expect((await resolve(target?.id ?? '', 'again')).data?.resolveReconciliationBreak.resolvedAt).toBe(resolved?.resolvedAt);
    const actions = await stack.db.operatorAction.findMany({ where: { action: 'resolveReconciliationBreak' } });
    expect(actions.map((a) => [a.targetId, a.detail])).toEqual([[target?.id, 'provider confirmed a fee of 1p']]);

    const listed = await gql<{ reconciliationBreaks: Break[] }>(
      stack.apiUrl,
      stack.operatorToken,
      'query($date: Date!) { reconciliationBreaks(date: $date) { id kind resolvedAt } }',
      { date: today },
    );
    expect(listed.data?.reconciliationBreaks).toHaveLength(3);
    expect(listed.data?.reconciliationBreaks.filter((b) => b.resolvedAt)).toHaveLength(1);
    // Each run is in the operator action log, under the operator who ran it.
    expect(await stack.db.operatorAction.count({ where: { action: 'reconcile', operator: TEST_OPERATOR } })).toBe(3);
    // Customers may not reconcile or see breaks.
    expect((await gql(stack.apiUrl, frank.token, RECONCILE, { date: today })).errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN' });
    expect(
      (await gql(stack.apiUrl, stack.operatorToken, RECONCILE, { date: addCalendarDays(today, 1) })).errors?.[0]?.extensions,
    ).toMatchObject({
      code: 'BAD_USER_INPUT',
      field: ['date'],
    });
  });

  it('runs as a job of the registry, as the system, for the day it is given (yesterday when scheduled)', async () => {
    const worker = stack.worker;
    if (!worker) throw new Error('the stack has a worker');
    const yesterday = addCalendarDays(today, -1);
    await enqueueReconciliation(worker.boss, yesterday);
    await vi.waitFor(
      async () =>
        expect(
          await stack.db.reconciliationRun.findMany({ where: { runBy: 'system:reconcile' }, select: { date: true, breaksFound: true } }),
        ).toEqual([{ date: new Date(`${yesterday}T00:00:00Z`), breaksFound: 0 }]),
      { timeout: 20_000, interval: 200 },
    );
    expect(await stack.db.operatorAction.count({ where: { action: 'reconcile', operator: 'system:reconcile' } })).toBe(1);
  });
});
