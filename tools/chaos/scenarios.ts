import type { PgBoss } from 'pg-boss';
import { queuePolicy, startQueue } from '../../src/app/queue.ts';
import { addCalendarDays, type CalendarDate, type Clock, londonToday, startOfLondonDay, systemClock } from '../../src/calendar.ts';
import { loadConfig } from '../../src/config.ts';
import { createPrisma, type PrismaClient } from '../../src/db/prisma.ts';
import { createPaymentJobs } from '../../src/jobs/enqueue.ts';
import { createLogger } from '../../src/logger.ts';
import { createMetrics } from '../../src/ops/metrics.ts';
import { createHoldService } from '../../src/payments/holds.ts';
import { createScheduledExecution } from '../../src/payments/scheduled.ts';
import { createStandingOrders } from '../../src/payments/standing-orders.ts';

/**
 * The chaos run's payee-safety workload (every way money leaves: standing orders, scheduled days, holds), alongside the payments of run.ts:
 * saved payees and Confirmation of Payee (MATCH and NO_MATCH, refusals PAYEE_NOT_CONFIRMED of a
 * standing order and a payment), standing orders, scheduled payments, payments to new payees, and
 * cancellations of orders and scheduled payments, all through the API under the run's faults.
 *
 * Days pass on the runner's own clock, as the tests move theirs: at a `next-day` step the runner
 * runs the day's work with the service's own functions (the standing-order scheduler, each due
 * scheduled payment's execution and hold expiry, exactly what the workers' jobs call), against the
 * same database, while the traffic and the faults go on. Occurrences due today are made and run by
 * the workers themselves. HOLD_MAX_HOURS is 1, so every hold still waiting when a day passes
 * expires; the operator (run.ts) approves some holds, rejects some and leaves the rest to expire.
 */

/** PAYEE_CHECK_THRESHOLD of the run: above the ordinary payments (at most 20,000), below these. */
export const CHECK_THRESHOLD = 50_000;
const UNCONFIRMED_AMOUNT = 60_000;
/** A payee saved less than this long ago is new: new for the first two of the run's days. */
export const NEW_PAYEE_HOURS = 72;
export const HOLD_MAX_HOURS = 1;
/** Days the traffic's `next-day` steps reach; the run ends on this day, past a weekly order's second occurrence. */
export const FINAL_DAY = 8;
/** Accounts that also try what Confirmation of Payee must refuse, before the traffic. */
const REFUSAL_ACCOUNTS = 6;

/** The settings the service runs with for these scenarios. */
export const SAFETY_ENV = {
  PAYEE_CHECK_THRESHOLD: String(CHECK_THRESHOLD),
  NEW_PAYEE_HOURS: String(NEW_PAYEE_HOURS),
  HOLD_MAX_HOURS: String(HOLD_MAX_HOURS),
};

export type SafetyItem =
  | {
      kind: 'standing-order';
      /** Sent once this many ordinary payments have been answered. */
      at: number;
      account: number;
      amount: number;
      frequency: 'WEEKLY' | 'MONTHLY';
      /** firstPaymentOn, in days after today (0: the workers make and run it now). */
      firstIn: number;
      /** lastPaymentOn, in days after firstPaymentOn; null: until cancelled. */
      lastAfter: number | null;
      toPayee: boolean;
      /** Cancelled once this many payments have been answered; null: never. */
      cancelAt: number | null;
    }
  | { kind: 'scheduled'; at: number; account: number; amount: number; executeIn: number; toPayee: boolean; cancelAt: number | null }
  | { kind: 'to-payee'; at: number; account: number; amount: number };

/** The scenarios from the run's generator: about one standing order and one scheduled payment per 15 payments. */
export function planSafety(int: (from: number, to: number) => number, chance: (p: number) => boolean, payments: number, accounts: number) {
  const items: SafetyItem[] = [];
  const at = () => int(0, Math.max(0, payments - 1));
  const cancelAfter = (from: number) => (chance(0.25) ? int(from, Math.max(from, payments - 1)) : null);
  const count = Math.max(4, Math.round(payments / 15));
  for (let n = 0; n < count; n++) {
    const from = at();
    items.push({
      kind: 'standing-order',
      at: from,
      account: int(0, accounts - 1),
      // Some at REVIEW_THRESHOLD (18,000) or more: held whoever they pay.
      amount: int(1, 22_000),
      frequency: chance(0.7) ? 'WEEKLY' : 'MONTHLY',
      firstIn: int(0, 3),
      lastAfter: chance(0.3) ? int(0, 10) : null,
      toPayee: chance(0.6),
      cancelAt: cancelAfter(from),
    });
  }
  for (let n = 0; n < count; n++) {
    const from = at();
    // Most within the run's days; some long after it (still SCHEDULED at the end, as they should
    // be), and every fourth long after it and cancelled while it waits.
    const waits = n % 4 === 0;
    items.push({
      kind: 'scheduled',
      at: from,
      account: int(0, accounts - 1),
      amount: int(1, 22_000),
      executeIn: waits || chance(0.15) ? int(30, 60) : int(1, 3),
      toPayee: chance(0.5),
      cancelAt: waits ? int(from, Math.max(from, payments - 1)) : cancelAfter(from),
    });
  }
  for (let n = 0; n < Math.max(3, Math.round(payments / 20)); n++) {
    items.push({ kind: 'to-payee', at: at(), account: int(0, accounts - 1), amount: int(1, 5_000) });
  }
  return items.sort((a, b) => a.at - b.at);
}

type Graphql = (
  url: string,
  token: string,
  query: string,
  variables: Record<string, unknown>,
) => Promise<{ data?: Record<string, unknown> | null; errors?: unknown }>;

export interface SafetyContext {
  seed: number;
  env: Record<string, string>;
  databaseUrl: string;
  providerUrl: string;
  providerApiKey: string;
  accounts: ReadonlyArray<{ accountId: string; token: string }>;
  apiUrl: (i: number) => string;
  graphql: Graphql;
  problems: string[];
  log: (line: string) => void;
}

const CHAOS_RECIPIENT = { name: 'Chaos Recipient', sortCode: '112233', accountNumber: '12345678' };
const payeeOf = (i: number) => ({ name: `Payee ${i}`, sortCode: '204060', accountNumber: String(50_000_000 + i) });
const strangerOf = (i: number) => ({ name: `Stranger ${i}`, sortCode: '204060', accountNumber: String(60_000_000 + i) });

const SEND = 'mutation($i: SendPaymentInput!) { sendPayment(input: $i) { payment { id status } errors { code } } }';
const CREATE_ORDER = 'mutation($i: CreateStandingOrderInput!) { createStandingOrder(input: $i) { standingOrder { id } errors { code } } }';

export function createSafetyScenarios(ctx: SafetyContext) {
  const { accounts, graphql, apiUrl } = ctx;
  /** What the runner saw; the table's figures are read from the database. */
  const counters = {
    refusedPayeeNotConfirmed: 0,
    noMatchChecks: 0,
    matchChecks: 0,
    ordersCreated: 0,
    scheduledCreated: 0,
    toPayeeSent: 0,
    cancelRequests: 0,
    days: 0,
    dayRetries: 0,
    occurrencesMadeByRunner: 0,
    executedByRunner: 0,
    expiredByRunner: 0,
  };
  // The runner's clock: the real time until the first `next-day`, then days ahead of it.
  let offsetMs = 0;
  const clock: Clock = { now: () => new Date(Date.now() + offsetMs) };
  const setClock = (moment: Date) => {
    offsetMs = Math.max(offsetMs, moment.getTime() - Date.now());
  };
  const baseDay = londonToday(systemClock);
  let day = 0;

  /** A mutation retried, alternating APIs, until it gets an answer with data (the same key makes it safe). */
  async function call(account: number, query: string, variables: Record<string, unknown>, field: string) {
    const token = accounts[account]?.token ?? '';
    for (let attempt = 0; attempt < 60; attempt++) {
      try {
        const r = await graphql(apiUrl(attempt % 2), token, query, variables);
        const payload = r.data?.[field];
        if (payload) return payload as Record<string, unknown>;
      } catch {
        // the process or the database is restarting, or the process is frozen
      }
      await new Promise((r) => setTimeout(r, Math.min(100 * (attempt + 1), 1_000)));
    }
    ctx.problems.push(`${field} never got an answer`);
    return null;
  }

  /** Before the traffic (no faults yet): every account saves a payee; a few try what must be refused. */
  async function setup(): Promise<void> {
    const names = async (recipient: { name: string; sortCode: string; accountNumber: string }) => {
      const response = await fetch(`${ctx.providerUrl}/admin/payee-names`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', 'x-api-key': ctx.providerApiKey },
        body: JSON.stringify(recipient),
      });
      if (!response.ok) throw new Error(`holding a payee name failed: ${response.status}`);
    };
    // The accounts side by side, as customers would: each one's steps in order.
    await Promise.all(
      accounts.map(async (_, i) => {
        await names(payeeOf(i));
        await names(strangerOf(i));
        const added = await call(i, 'mutation($i: RecipientInput!) { addPayee(input: $i) { id } }', { i: payeeOf(i) }, 'addPayee');
        if (!added) throw new Error(`addPayee failed for account ${i}`);
      }),
    );
    await Promise.all(Array.from({ length: Math.min(REFUSAL_ACCOUNTS, accounts.length) }, (_, i) => refuse(i)));
  }

  /** What Confirmation of Payee must refuse, from account `i`: all before any fault. */
  async function refuse(i: number): Promise<void> {
    const accountId = accounts[i]?.accountId;
    const stranger = strangerOf(i);
    const check = async (name: string) =>
      (await call(
        i,
        'mutation($i: RecipientInput!) { checkPayee(input: $i) { id result } }',
        { i: { ...stranger, name } },
        'checkPayee',
      )) as {
        id: string;
        result: string;
      } | null;
    const matched = await check(stranger.name);
    if (matched?.result === 'MATCH') counters.matchChecks++;
    else ctx.problems.push(`checkPayee of ${stranger.name}'s own name answered ${matched?.result}`);
    const wrong = await check('Mallory Chaos');
    if (wrong?.result === 'NO_MATCH') counters.noMatchChecks++;
    else ctx.problems.push(`checkPayee of a wrong name answered ${wrong?.result}`);
    const base = {
      fromAccountId: accountId,
      amount: UNCONFIRMED_AMOUNT,
      recipient: { ...stranger, name: 'Mallory Chaos' },
      reference: 'chaos',
    };
    const order = (key: string, payeeCheckId: string | null) => ({
      ...base,
      idempotencyKey: key,
      payeeCheckId,
      frequency: 'WEEKLY',
      firstPaymentOn: londonToday(systemClock),
    });
    const attempts: Array<[string, string, Record<string, unknown>, string]> = [
      [
        'a standing order with a NO_MATCH check',
        CREATE_ORDER,
        order(`chaos-refused-so-${ctx.seed}-${i}`, wrong?.id ?? null),
        'createStandingOrder',
      ],
      ['a standing order without a check', CREATE_ORDER, order(`chaos-refused-so-nocheck-${ctx.seed}-${i}`, null), 'createStandingOrder'],
      [
        'a payment with a NO_MATCH check',
        SEND,
        { ...base, idempotencyKey: `chaos-refused-${ctx.seed}-${i}`, payeeCheckId: wrong?.id ?? null },
        'sendPayment',
      ],
    ];
    for (const [what, query, input, field] of attempts) {
      const payload = (await call(i, query, { i: input }, field)) as { errors?: Array<{ code: string }> } | null;
      const code = payload?.errors?.[0]?.code;
      if (code === 'PAYEE_NOT_CONFIRMED') counters.refusedPayeeNotConfirmed++;
      else ctx.problems.push(`${what} to an unconfirmed recipient was answered ${code ?? 'with success'}, not PAYEE_NOT_CONFIRMED`);
    }
  }

  /** The scenarios, each once `answered()` ordinary payments have been answered; cancellations likewise. */
  async function run(items: SafetyItem[], answered: () => number, done: () => boolean): Promise<void> {
    const made: Array<{ kind: 'order' | 'payment'; id: string; account: number } | null> = [];
    const cancels = items
      .map((item, n) => ({ n, at: item.kind === 'to-payee' ? null : item.cancelAt }))
      .filter((c): c is { n: number; at: number } => c.at !== null)
      .sort((a, b) => a.at - b.at);
    const reached = async (at: number) => {
      while (answered() < at && !done()) await new Promise((r) => setTimeout(r, 20));
    };
    const cancel = async (upTo: number) => {
      while (cancels.length > 0 && (cancels[0]?.at ?? 0) <= upTo) {
        const c = cancels.shift();
        const target = c === undefined ? null : made[c.n];
        if (!target) continue;
        counters.cancelRequests++;
        if (target.kind === 'order') {
          await call(
            target.account,
            'mutation($id: ID!) { cancelStandingOrder(id: $id) { id active } }',
            { id: target.id },
            'cancelStandingOrder',
          );
        } else {
          // SCHEDULED: cancelled; run since (PENDING, HELD): cancelled or not cancellable, as it stands.
          await call(
            target.account,
            'mutation($id: ID!) { cancelPayment(paymentId: $id) { payment { id status } errors { code } } }',
            { id: target.id },
            'cancelPayment',
          );
        }
      }
    };
    for (const [n, item] of items.entries()) {
      await reached(item.at);
      await cancel(item.at);
      const account = accounts[item.account];
      if (!account) continue;
      const recipient = item.kind === 'to-payee' || item.toPayee ? payeeOf(item.account) : CHAOS_RECIPIENT;
      // "Today" as the API sees it, when the request is made.
      const today = londonToday(systemClock);
      if (item.kind === 'standing-order') {
        const payload = (await call(
          item.account,
          CREATE_ORDER,
          {
            i: {
              idempotencyKey: `chaos-so-${ctx.seed}-${n}`,
              fromAccountId: account.accountId,
              amount: item.amount,
              recipient,
              reference: `chaos order ${n}`,
              frequency: item.frequency,
              firstPaymentOn: addCalendarDays(today, item.firstIn),
              lastPaymentOn: item.lastAfter === null ? null : addCalendarDays(today, item.firstIn + item.lastAfter),
            },
          },
          'createStandingOrder',
        )) as { standingOrder: { id: string } | null; errors: Array<{ code: string }> } | null;
        if (payload?.standingOrder) counters.ordersCreated++;
        else if (payload) ctx.problems.push(`standing order ${n} refused: ${JSON.stringify(payload.errors)}`);
        made[n] = payload?.standingOrder ? { kind: 'order', id: payload.standingOrder.id, account: item.account } : null;
      } else {
        const payload = (await call(
          item.account,
          SEND,
          {
            i: {
              idempotencyKey: `chaos-${item.kind}-${ctx.seed}-${n}`,
              fromAccountId: account.accountId,
              amount: item.amount,
              recipient,
              reference: `chaos ${item.kind} ${n}`,
              ...(item.kind === 'scheduled' ? { executeOn: addCalendarDays(today, item.executeIn) } : {}),
            },
          },
          'sendPayment',
        )) as { payment: { id: string } | null; errors: Array<{ code: string }> } | null;
        const id = payload?.payment?.id;
        if (id && item.kind === 'scheduled') counters.scheduledCreated++;
        if (id && item.kind === 'to-payee') counters.toPayeeSent++;
        made[n] = id ? { kind: 'payment', id, account: item.account } : null;
      }
    }
    await cancel(Number.POSITIVE_INFINITY);
  }

  /**
   * A day passes on the runner's clock (day `to`, or the next): the standing-order scheduler makes
   * every occurrence due by then, each SCHEDULED payment due runs, and holds older than
   * HOLD_MAX_HOURS expire. The runner's own pg-boss sends the jobs these make (settlement of what
   * runs unheld), for the workers to take.
   */
  async function nextDay(to = day + 1): Promise<void> {
    day = Math.max(day + 1, to);
    const date = addCalendarDays(baseDay, day);
    setClock(new Date(startOfLondonDay(date).getTime() + 6 * 3600_000));
    await withServices(async ({ orders, scheduled, holds, prisma }) => {
      const made = await orders.runDue();
      const due = await prisma.$queryRaw<{ id: string }[]>`
        SELECT id::text AS id FROM payments WHERE status = 'SCHEDULED' AND execute_on <= ${date}::date ORDER BY execute_on, id`;
      for (const { id } of due) await scheduled.execute(id);
      const expired = (await holds.expireHolds()).length;
      counters.occurrencesMadeByRunner += made;
      counters.executedByRunner += due.length;
      counters.expiredByRunner += expired;
      ctx.log(`  day ${date}: ${made} occurrences made, ${due.length} scheduled payments run, ${expired} holds expired`);
    });
    counters.days++;
  }

  /** Later the same day: holds still waiting from this day's runs expire too. */
  async function expireLeftHolds(): Promise<void> {
    // Never into the next day: that day's runs would be owed.
    const endOfDay = startOfLondonDay(addCalendarDays(baseDay, day + 1)).getTime() - 60_000;
    setClock(new Date(Math.min(clock.now().getTime() + (HOLD_MAX_HOURS + 1) * 3600_000, endOfDay)));
    await withServices(async ({ holds }) => {
      counters.expiredByRunner += (await holds.expireHolds()).length;
    });
  }

  let prismaRef: PrismaClient | null = null;
  const config = loadConfig({ ...ctx.env });
  const logger = createLogger({ level: 'silent', name: 'chaos-days' });
  const metrics = createMetrics();
  async function withServices(
    work: (services: {
      prisma: PrismaClient;
      orders: ReturnType<typeof createStandingOrders>;
      scheduled: ReturnType<typeof createScheduledExecution>;
      holds: ReturnType<typeof createHoldService>;
    }) => Promise<void>,
  ): Promise<void> {
    // Through a transaction pooler (the failover run's PgBouncer) with unnamed statements, as the service's own.
    prismaRef ??= createPrisma({
      databaseUrl: ctx.databaseUrl,
      poolSize: 2,
      applicationName: 'chaos-days',
      ...(config.database.pooled ? { session: config.database } : {}),
    });
    const prisma = prismaRef;
    // Each step is retried whole: every part of it is safe to run again.
    for (let attempt = 1; ; attempt++) {
      let boss: PgBoss | null = null;
      try {
        boss = await startQueue({ databaseUrl: ctx.databaseUrl, config, logger });
        const jobs = createPaymentJobs({ boss, policy: queuePolicy(config), clock });
        const common = { prisma, jobs, clock, policy: config.payeeSafety, logger, metrics };
        await work({
          prisma,
          orders: createStandingOrders(common),
          scheduled: createScheduledExecution(common),
          holds: createHoldService(common),
        });
        return;
      } catch (error) {
        counters.dayRetries++;
        if (attempt >= 10) {
          ctx.problems.push(`day ${day} could not be run: ${String(error)}`);
          return;
        }
        await new Promise((r) => setTimeout(r, 500));
      } finally {
        await boss?.stop({ graceful: false, close: true }).catch(() => undefined);
      }
    }
  }

  return {
    counters,
    clock,
    setup,
    run,
    nextDay,
    expireLeftHolds,
    get day(): CalendarDate {
      return addCalendarDays(baseDay, day);
    },
    async stop() {
      await prismaRef?.$disconnect();
    },
  };
}

export type SafetyScenarios = ReturnType<typeof createSafetyScenarios>;

/** The table's figures for these scenarios, from the database (what happened, whatever answers were lost). */
export async function safetyRows(
  prisma: PrismaClient,
  counters: SafetyScenarios['counters'],
  reviewThreshold: number,
): Promise<Array<[string, string | number]>> {
  const [r] = await prisma.$queryRaw<
    Array<{
      orders: bigint;
      orders_cancelled: bigint;
      occurrences: bigint;
      occurrences_run: bigint;
      occurrences_cancelled: bigint;
      occurrences_waiting: bigint;
      scheduled: bigint;
      scheduled_run: bigint;
      scheduled_cancelled: bigint;
      scheduled_waiting: bigint;
      payees: bigint;
      let_through: bigint;
      held: bigint;
      approved: bigint;
      rejected: bigint;
      expired: bigint;
      held_cancelled: bigint;
      held_new_payee: bigint;
    }>
  >`
    WITH ev AS (
      SELECT payment_id, bool_or(previous_status = 'SCHEDULED' AND status <> 'CANCELLED') AS ran,
        bool_or(previous_status = 'SCHEDULED' AND status = 'CANCELLED') AS cancelled, bool_or(status = 'HELD') AS held
      FROM payment_events GROUP BY payment_id)
    SELECT
      (SELECT count(*) FROM standing_orders) AS orders,
      (SELECT count(*) FROM standing_orders WHERE cancelled_at IS NOT NULL) AS orders_cancelled,
      count(*) FILTER (WHERE p.standing_order_id IS NOT NULL) AS occurrences,
      count(*) FILTER (WHERE p.standing_order_id IS NOT NULL AND ev.ran) AS occurrences_run,
      count(*) FILTER (WHERE p.standing_order_id IS NOT NULL AND ev.cancelled) AS occurrences_cancelled,
      count(*) FILTER (WHERE p.standing_order_id IS NOT NULL AND p.status = 'SCHEDULED') AS occurrences_waiting,
      count(*) FILTER (WHERE p.standing_order_id IS NULL AND p.execute_on IS NOT NULL) AS scheduled,
      count(*) FILTER (WHERE p.standing_order_id IS NULL AND p.execute_on IS NOT NULL AND ev.ran) AS scheduled_run,
      count(*) FILTER (WHERE p.standing_order_id IS NULL AND p.execute_on IS NOT NULL AND ev.cancelled) AS scheduled_cancelled,
      count(*) FILTER (WHERE p.standing_order_id IS NULL AND p.status = 'SCHEDULED') AS scheduled_waiting,
      (SELECT count(*) FROM payees) AS payees,
      (SELECT count(*) FROM payees WHERE let_through_at IS NOT NULL) AS let_through,
      count(*) FILTER (WHERE ev.held) AS held,
      (SELECT count(*) FROM operator_actions WHERE action = 'approvePayment') AS approved,
      (SELECT count(*) FROM operator_actions WHERE action = 'rejectPayment') AS rejected,
      (SELECT count(*) FROM operator_actions WHERE action = 'expireHold') AS expired,
      count(*) FILTER (WHERE ev.held AND p.failure_reason = 'CANCELLED_BY_CUSTOMER') AS held_cancelled,
      count(*) FILTER (WHERE ev.held AND p.amount < ${reviewThreshold}) AS held_new_payee
    FROM payments p LEFT JOIN ev ON ev.payment_id = p.id`;
  const n = (v: bigint | undefined) => Number(v ?? 0);
  return [
    [
      'payees added (let through) / CoP checks MATCH, NO_MATCH / refused PAYEE_NOT_CONFIRMED',
      `${n(r?.payees)} (${n(r?.let_through)}) / ${counters.matchChecks}, ${counters.noMatchChecks} / ${counters.refusedPayeeNotConfirmed}`,
    ],
    ['standing orders created (cancelled)', `${n(r?.orders)} (${n(r?.orders_cancelled)})`],
    [
      'standing-order occurrences: made / executed / cancelled / waiting',
      `${n(r?.occurrences)} / ${n(r?.occurrences_run)} / ${n(r?.occurrences_cancelled)} / ${n(r?.occurrences_waiting)}`,
    ],
    [
      'scheduled payments: made / executed / cancelled / waiting',
      `${n(r?.scheduled)} / ${n(r?.scheduled_run)} / ${n(r?.scheduled_cancelled)} / ${n(r?.scheduled_waiting)}`,
    ],
    [
      'payments HELD (under REVIEW_THRESHOLD): approved / rejected / expired / cancelled by customer',
      `${n(r?.held)} (${n(r?.held_new_payee)}): ${n(r?.approved)} / ${n(r?.rejected)} / ${n(r?.expired)} / ${n(r?.held_cancelled)}`,
    ],
    ['days passed on the runner clock (retries)', `${counters.days}, to +${FINAL_DAY} (${counters.dayRetries})`],
  ];
}
