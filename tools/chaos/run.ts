import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { type AuditReport, audit, formatAudit } from '../../src/audit.ts';
import { signToken } from '../../src/auth.ts';
import { londonToday } from '../../src/calendar.ts';
import { createPrisma, prismaSql } from '../../src/db/prisma.ts';
import { START } from '../../src/events/cursor.ts';
import { readEvents } from '../../src/events/store.ts';
import { verifyWebhookSignature } from '../../src/webhooks/verify.ts';
import { freePort } from '../free-port.ts';
import { type StartedProcess, startProcess } from '../processes.ts';
import { accountEventIds, compareStreams, type EventFollower, followAccountEvents } from './event-follower.ts';
import { startChaosDatabase } from './failover.ts';
import { createSafetyScenarios, FINAL_DAY, planSafety, SAFETY_ENV, type SafetyItem, safetyRows } from './scenarios.ts';

/** The element at `i`, which must be there. */
function at<T>(list: readonly T[], i: number): T {
  const value = list[i];
  if (value === undefined) throw new Error(`nothing at ${i}`);
  return value;
}

/**
 * A Jepsen-style bank workload against real processes: 2 API processes, 2 workers, the provider
 * emulator and PostgreSQL. Concurrent payments across many accounts (some to rejected
 * recipients, some replays of an earlier key), inbound credits (some to accounts we do not have)
 * and returns of accepted payments by the recipient's bank, while the schedule injects provider
 * faults, kills and restarts workers, restarts an API process, freezes an API process and a worker
 * (SIGSTOP, then SIGCONT a few seconds later), restarts PostgreSQL once and, where replicas can be
 * built, fails the primary over to a standby once (failover.ts). Alongside, the
 * payee-safety workload of scenarios.ts: saved payees, Confirmation of Payee refusals, standing
 * orders, scheduled payments and their cancellations, with days passing on the runner's clock.
 * Payments of REVIEW_THRESHOLD or more, and first payments to new payees, are HELD, and an operator
 * reviews them throughout (approving those whose amount is a multiple of 3, rejecting those one
 * more, leaving the rest to expire when a day passes). Then the faults are lifted, every payment
 * must reach a terminal status (or still wait for a day after the run's last) within a deadline,
 * and the audit runs. A webhook receiver
 * on 127.0.0.1, registered for a few accounts, must by then have had every event of those
 * accounts at least once, each with a valid signature.
 *
 * The seed fixes the workload and the schedule (what happens after how many payments); the
 * operating system still decides the interleavings, as it would in production.
 */

export interface ChaosOptions {
  payments: number;
  seed: number;
  /** Payments in flight at once. */
  concurrency?: number;
  /** How long settlement may take after the faults are lifted. */
  settleDeadlineMs?: number;
  /**
   * Run on a primary with two synchronous standbys behind PgBouncer and fail the primary over once
   * (tools/chaos/failover.ts), where replicas can be built; true by default. false keeps one
   * embedded PostgreSQL (the failover fault is then reported as skipped).
   */
  failover?: boolean;
  log?: (line: string) => void;
}

export interface ChaosResult {
  ok: boolean;
  table: string;
  audit: AuditReport;
  problems: string[];
}

type Action =
  | { kind: 'faults'; faults: Record<string, number> }
  | { kind: 'credits'; credits: PlannedCredit[] }
  | { kind: 'kill-worker'; index: number }
  | { kind: 'restart-api'; index: number }
  | { kind: 'restart-postgres' }
  /** The primary SIGKILLed mid-load, the most advanced standby promoted, PgBouncer re-pointed. */
  | { kind: 'failover' }
  /** SIGSTOP, then SIGCONT `ms` later: a VM pause or a process stuck mid-transaction. */
  | { kind: 'freeze'; role: 'api' | 'worker'; index: number; ms: number }
  /** A day passes on the runner's clock (scenarios.ts). */
  | { kind: 'next-day' };

interface PlannedPayment {
  account: number;
  amount: number;
  rejected: boolean;
  /** Index of an earlier planned payment whose request this one repeats, key and all. */
  replayOf: number | null;
}

/** Money coming in from outside: to one of our accounts, or to an account number we do not have. */
interface PlannedCredit {
  /** Index of the receiving account; null for an account we do not have (it must be sent back). */
  account: number | null;
  amount: number;
}

const API_KEY = 'chaos-provider-key';
const ACCOUNTS = 24;
/** The first this many accounts register a webhook endpoint. */
const WEBHOOK_ACCOUNTS = 4;
const FUNDING = 5_000_000;
/** Accounts whose event stream a WebSocket client follows through the whole run. */
const FOLLOWED_ACCOUNTS = 4;
/** Payments of this much or more are HELD for the operator's review: about one in ten of the workload. */
const REVIEW_THRESHOLD = 18_000;
const DAILY_PAYMENT_LIMIT = 2_500_000;
/** How often the operator looks at the held payments. */
const REVIEW_EVERY_MS = 300;

/** The checkpoint whose actions include the database failover. */
const FAILOVER_AT = 7;

/** The workload and the schedule, from the seed alone. */
export function plan(seed: number, payments: number) {
  const rng = xoroshiro128plus(seed);
  const int = (from: number, to: number) => uniformInt(rng, from, to);
  const chance = (p: number) => uniformFloat64(rng) < p;

  const work: PlannedPayment[] = [];
  for (let i = 0; i < payments; i++) {
    // A replay repeats an original request (never a replay of a replay), key and all.
    const picked = i > 10 && chance(0.1) ? int(0, i - 1) : null;
    const replayOf = picked === null ? null : (work[picked]?.replayOf ?? picked);
    work.push({ account: int(0, ACCOUNTS - 1), amount: int(1, 20_000), rejected: chance(0.1), replayOf });
  }

  // Ten checkpoints, each at a fixed count of payments sent: new provider faults and one crash.
  const schedule: Array<{ at: number; actions: Action[] }> = [];
  const checkpoints = 10;
  const postgresAt = Math.floor(checkpoints / 2);
  let creditsPlanned = 0;
  for (let c = 1; c <= checkpoints; c++) {
    const faults = {
      errorRate: int(0, 30) / 100,
      rateLimitRate: int(0, 15) / 100,
      timeoutRate: int(0, 8) / 100,
      acceptThenFailRate: int(0, 20) / 100,
      latencyMs: int(0, 40),
      // The recipient's bank sends some accepted payments back a little later.
      returnRate: int(0, 10) / 100,
      returnDelayMs: int(50, 1_000),
    };
    // Money coming in alongside: one credit per 5 payments, one in ten to an account we do not have.
    const credits: PlannedCredit[] = Array.from({ length: Math.ceil(payments / 5 / checkpoints) }, () => ({
      account: creditsPlanned++ % 10 === 3 ? null : int(0, ACCOUNTS - 1),
      amount: int(1, 30_000),
    }));
    const actions: Action[] = [
      { kind: 'faults', faults },
      { kind: 'credits', credits },
    ];
    const crash = int(0, 2);
    if (crash === 0 || c === 2) actions.push({ kind: 'restart-api', index: int(0, 1) });
    else actions.push({ kind: 'kill-worker', index: int(0, 1) });
    if (crash === 2) actions.push({ kind: 'kill-worker', index: int(0, 1) });
    if (c === postgresAt) actions.push({ kind: 'restart-postgres' });
    // Drawing nothing from the generator: the rest of the schedule stays what it was without it.
    if (c === FAILOVER_AT) actions.push({ kind: 'failover' });
    // An API process frozen under load, later a worker.
    if (c === 3 || c === 8) actions.push({ kind: 'freeze', role: c === 3 ? 'api' : 'worker', index: int(0, 1), ms: int(3_000, 6_000) });
    if (c % 3 === 0) actions.push({ kind: 'next-day' });
    schedule.push({ at: Math.floor((payments * c) / (checkpoints + 1)), actions });
  }
  const safety: SafetyItem[] = planSafety(int, chance, payments, ACCOUNTS);
  const digest = createHash('sha256').update(JSON.stringify({ work, schedule, safety })).digest('hex').slice(0, 16);
  return { work, schedule, safety, digest };
}

export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const log = options.log ?? (() => undefined);
  const { work, schedule, safety: safetyWork, digest } = plan(options.seed, options.payments);
  const started = Date.now();
  const problems: string[] = [];
  const counters = {
    faultChanges: 0,
    workerKills: 0,
    apiRestarts: 0,
    postgresRestarts: 0,
    freezes: 0,
    frozenMs: 0,
    clientRetries: 0,
    replaysChecked: 0,
    unexpectedExits: 0,
    approved: 0,
    rejected: 0,
    reviewRetries: 0,
    creditsSent: 0,
    creditsToUnknown: 0,
  };

  const dir = await mkdtemp(path.join(os.tmpdir(), 'payments-chaos-'));
  await chmod(dir, 0o755);
  const cleanups: Array<() => Promise<unknown>> = [];
  // Migrated; behind PgBouncer with standbys where this machine can build them (failover.ts).
  const database = await startChaosDatabase({ dir, failover: options.failover ?? true, log }).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw error;
  });
  try {
    const databaseUrl = database.env.DATABASE_URL ?? '';

    const secret = randomBytes(32).toString('hex');
    const providerPort = await freePort();
    const providerUrl = `http://127.0.0.1:${providerPort}`;
    const apiPorts = [await freePort(), await freePort()];
    const env = {
      ...database.env,
      AUTH_JWT_SECRET: secret,
      WEBHOOK_SECRET_KEY: randomBytes(32).toString('hex'),
      // The run's webhook receiver listens on 127.0.0.1.
      WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
      PROVIDER_URL: providerUrl,
      PROVIDER_API_KEY: API_KEY,
      PROVIDER_PORT: String(providerPort),
      PROVIDER_TIMEOUT_MS: '1000',
      PAYMENT_RETRY_LIMIT: '6',
      PAYMENT_RETRY_DELAY_SECONDS: '1',
      PAYMENT_RETRY_DELAY_MAX_SECONDS: '2',
      PAYMENT_JOB_EXPIRE_SECONDS: '3',
      QUEUE_SUPERVISE_SECONDS: '1',
      SEND_PAYMENT_RATE_LIMIT_PER_MINUTE: '0',
      REVIEW_THRESHOLD: String(REVIEW_THRESHOLD),
      DAILY_PAYMENT_LIMIT: String(DAILY_PAYMENT_LIMIT),
      DATABASE_POOL_SIZE: '8',
      WORKER_PORT: '0',
      WEBHOOK_TIMEOUT_MS: '1000',
      WEBHOOK_RETRY_DELAY_MS: '200',
      WEBHOOK_RETRY_DELAY_MAX_MS: '2000',
      WEBHOOK_DISPATCH_INTERVAL_MS: '100',
      PROVIDER_EVENTS_POLL_SECONDS: '1',
      ...SAFETY_ENV,
      // info: the runner learns that a process is ready from its log line.
      LOG_LEVEL: 'info',
    };
    // Processes that die without being told to are a finding, not noise: count them, restart them.
    const watched = new Set<StartedProcess>();
    const watch = (proc: StartedProcess, restart: () => Promise<void>) => {
      watched.add(proc);
      void proc.exited.then(async (exit) => {
        if (!watched.has(proc)) return;
        watched.delete(proc);
        counters.unexpectedExits++;
        const problem = `a process exited unexpectedly (${JSON.stringify(exit)}): ${proc.stderr().slice(-2_000)} ${proc.errors.slice(-1).join('')}`;
        problems.push(problem);
        log(`  PROBLEM: ${problem}`);
        await restart().catch(() => undefined);
      });
    };
    const stopWatching = (proc: StartedProcess) => watched.delete(proc);

    const provider = await startProcess('main-provider.ts', env, 'provider emulator listening');
    cleanups.push(() => {
      stopWatching(provider);
      return provider.stop();
    });
    // Like an orchestrator: a process that cannot start (its database is restarting, its port is
    // still held by its killed predecessor) is started again until it comes up.
    const startUntilUp = async (script: string, extra: Record<string, string>, ready: string) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await startProcess(script, { ...env, ...extra }, ready);
        } catch (error) {
          if (attempt >= 30) throw error;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    };
    const apis: StartedProcess[] = [];
    const startApi = async (i: number) => {
      const api = await startUntilUp('main-api.ts', { PORT: String(apiPorts[i]) }, 'API listening');
      apis[i] = api;
      watch(api, () => startApi(i));
    };
    const workers: StartedProcess[] = [];
    const startWorker = async (i: number) => {
      const worker = await startUntilUp('main-worker.ts', {}, 'worker started');
      workers[i] = worker;
      watch(worker, () => startWorker(i));
    };
    await Promise.all([startApi(0), startApi(1), startWorker(0), startWorker(1)]);
    const elapsed = () => `${Math.round((Date.now() - started) / 1000)} s`;
    log(`  processes up (${elapsed()})`);
    cleanups.push(() =>
      Promise.all(
        [...apis, ...workers].map((p) => {
          stopWatching(p);
          return p.kill();
        }),
      ),
    );
    const apiUrl = (i: number) => `http://127.0.0.1:${apiPorts[i]}/graphql`;

    const setFaults = async (faults: Record<string, number>) => {
      const response = await fetch(`${providerUrl}/admin/faults`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
        body: JSON.stringify(faults),
      });
      if (!response.ok) throw new Error(`setting faults failed: ${response.status}`);
    };

    // Accounts: via the API as an operator would, so the seed path is the real one.
    const operator = await signToken({ role: 'operator', operatorId: 'operator:chaos' }, secret, 3600);
    const graphql = async (url: string, token: string, query: string, variables: Record<string, unknown>) => {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
        signal: AbortSignal.timeout(15_000),
      });
      return (await response.json()) as { data?: Record<string, unknown> | null; errors?: Array<{ extensions?: { code?: string } }> };
    };
    const accounts: Array<{ accountId: string; token: string; sortCode: string; accountNumber: string }> = [];
    for (let i = 0; i < ACCOUNTS; i++) {
      const c = await graphql(apiUrl(0), operator, 'mutation($n: String!) { createCustomer(input: { name: $n }) { id } }', {
        n: `Chaos ${i}`,
      });
      const customerId = (c.data?.createCustomer as { id: string } | undefined)?.id;
      if (!customerId) throw new Error(`createCustomer failed: ${JSON.stringify(c)}`);
      const a = await graphql(
        apiUrl(0),
        operator,
        'mutation($c: ID!) { openAccount(input: { customerId: $c, name: "Main" }) { id sortCode accountNumber } }',
        { c: customerId },
      );
      const opened = a.data?.openAccount as { id: string; sortCode: string; accountNumber: string };
      const accountId = opened.id;
      await graphql(
        apiUrl(0),
        operator,
        'mutation($a: ID!, $p: Money!) { depositFunds(input: { accountId: $a, amount: $p, idempotencyKey: "chaos-funding" }) { id } }',
        { a: accountId, p: FUNDING },
      );
      accounts.push({
        accountId,
        sortCode: opened.sortCode,
        accountNumber: opened.accountNumber,
        token: await signToken({ role: 'customer', customerId }, secret, 3600),
      });
    }

    // A few accounts' event streams followed throughout, as integrators would, across restarts.
    const followed = accounts.slice(0, FOLLOWED_ACCOUNTS);
    const followers: EventFollower[] = followed.map((a) =>
      followAccountEvents({ urls: [apiUrl(0), apiUrl(1)], token: a.token, accountId: a.accountId }),
    );
    cleanups.push(() => Promise.all(followers.map((f) => f.stop())));
    // The integrator's side: a receiver that checks each request's signature with the account's secret.
    const secrets = new Map<string, string>();
    const arrived = new Map<string, { valid: number; invalid: number }>();
    const receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const rawBody = Buffer.concat(chunks).toString('utf8');
        let accountId = '';
        try {
          accountId = String((JSON.parse(rawBody) as { accountId?: unknown }).accountId);
        } catch {
          // counted as invalid below
        }
        const header = req.headers['payments-signature'];
        const ok = verifyWebhookSignature({
          secret: secrets.get(accountId) ?? '',
          rawBody,
          header: typeof header === 'string' ? header : null,
        }).ok;
        const id = String(req.headers['payments-event-id']);
        const seen = arrived.get(id) ?? { valid: 0, invalid: 0 };
        if (ok) seen.valid++;
        else seen.invalid++;
        arrived.set(id, seen);
        res.writeHead(ok ? 200 : 400).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise((resolve) => {
          receiver.closeAllConnections();
          receiver.close(resolve);
        }),
    );
    const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    for (const account of accounts.slice(0, WEBHOOK_ACCOUNTS)) {
      const r = await graphql(
        apiUrl(0),
        account.token,
        'mutation($i: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $i) { secret errors { message } } }',
        { i: { accountId: account.accountId, url: receiverUrl } },
      );
      const secret = (r.data?.createWebhookEndpoint as { secret: string | null } | undefined)?.secret;
      if (!secret) throw new Error(`createWebhookEndpoint failed: ${JSON.stringify(r)}`);
      secrets.set(account.accountId, secret);
    }

    // Payees, Confirmation of Payee refusals, standing orders, scheduled payments, days passing.
    const safety = createSafetyScenarios({
      seed: options.seed,
      env,
      databaseUrl,
      providerUrl,
      providerApiKey: API_KEY,
      accounts,
      apiUrl,
      graphql,
      problems,
      log,
    });
    cleanups.push(() => safety.stop());
    log(`  accounts opened and funded (${elapsed()})`);
    await safety.setup();
    log(`  payees saved, unconfirmed recipients refused (${elapsed()})`);

    // Balances sampled throughout, on a connection of the runner's own.
    const samples = { count: 0, negative: 0, min: Number.POSITIVE_INFINITY };
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const client = new pg.Client({ connectionString: databaseUrl });
        client.on('error', () => undefined); // PostgreSQL restarting: the query below fails and we reconnect
        try {
          await client.connect();
          while (sampling) {
            const { rows } = await client.query<{ min: string; negative: string }>(
              'SELECT min(balance)::text AS min, count(*) FILTER (WHERE balance < 0)::text AS negative FROM accounts',
            );
            samples.count++;
            samples.min = Math.min(samples.min, Number(rows[0]?.min ?? 0));
            samples.negative += Number(rows[0]?.negative ?? 0);
            await new Promise((r) => setTimeout(r, 100));
          }
        } catch {
          await new Promise((r) => setTimeout(r, 200)); // PostgreSQL restarting: sample again when it is back
        } finally {
          await client.end().catch(() => undefined);
        }
      }
    })();

    // The operator: reviews the held payments, on either API, through restarts, page by page. A
    // review that gets no answer (its API or the database restarting) is simply done again on the
    // next round. Amounts that are a multiple of 3 are approved, one more rejected, the rest left
    // to expire.
    let reviewing = true;
    let reviewRound = 0;
    const review = async (): Promise<number> => {
      const url = apiUrl(reviewRound++ % 2);
      const held: Array<{ node: { id: string; amount: number } }> = [];
      for (let after: string | null = null, more = true; more; ) {
        const page = await graphql(
          url,
          operator,
          'query($after: String) { heldPayments(first: 50, after: $after) { edges { node { id amount } } pageInfo { hasNextPage endCursor } } }',
          { after },
        );
        const connection = page.data?.heldPayments as
          | { edges: Array<{ node: { id: string; amount: number } }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } }
          | undefined;
        if (!connection) throw new Error('heldPayments got no answer');
        held.push(...connection.edges);
        more = connection.pageInfo.hasNextPage;
        after = connection.pageInfo.endCursor;
      }
      for (const { node } of held) {
        if (node.amount % 3 === 2) continue;
        const approve = node.amount % 3 === 0;
        const r = await graphql(
          url,
          operator,
          approve
            ? 'mutation($id: ID!) { approvePayment(paymentId: $id) { id } }'
            : 'mutation($id: ID!) { rejectPayment(paymentId: $id, reason: "chaos review") { id } }',
          { id: node.id },
        );
        if (r.data && !r.errors) counters[approve ? 'approved' : 'rejected']++;
      }
      return held.length;
    };
    const reviewer = (async () => {
      while (reviewing) {
        await review().catch(() => counters.reviewRetries++);
        await new Promise((r) => setTimeout(r, REVIEW_EVERY_MS));
      }
    })();
    cleanups.push(() => {
      reviewing = false;
      return reviewer;
    });

    // SIGKILL, not SIGTERM: a crash, with whatever it had in flight.
    const killAndRestart = async (processes: StartedProcess[], index: number, start: (i: number) => Promise<void>) => {
      const victim = processes[index];
      if (victim) {
        stopWatching(victim);
        await victim.kill();
      }
      await start(index);
    };

    const sendCredits = async (credits: PlannedCredit[]) => {
      for (const credit of credits) {
        const to = credit.account === null ? null : accounts[credit.account];
        const response = await fetch(`${providerUrl}/admin/credits`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
          body: JSON.stringify({
            amount: credit.amount,
            recipient: to
              ? { sortCode: to.sortCode, accountNumber: to.accountNumber }
              : { sortCode: at(accounts, 0).sortCode, accountNumber: String(10_000_000 + counters.creditsSent) },
            sender: { name: 'Chaos Payer', sortCode: '401234', accountNumber: '87654321' },
            reference: `chaos credit ${counters.creditsSent}`,
          }),
        });
        if (!response.ok) throw new Error(`queuing a credit failed: ${response.status}`);
        counters.creditsSent++;
        if (!to) counters.creditsToUnknown++;
      }
    };

    const runAction = async (action: Action) => {
      log(`  chaos: ${action.kind === 'credits' ? `${action.credits.length} inbound credits` : JSON.stringify(action)}`);
      switch (action.kind) {
        case 'faults':
          counters.faultChanges++;
          return setFaults(action.faults);
        case 'credits':
          return sendCredits(action.credits);
        case 'kill-worker':
          counters.workerKills++;
          return killAndRestart(workers, action.index, startWorker);
        case 'restart-api':
          counters.apiRestarts++;
          return killAndRestart(apis, action.index, startApi);
        case 'restart-postgres':
          counters.postgresRestarts++;
          return database.restart();
        case 'failover':
          if (database.failoverSkipped !== null) {
            log(`  chaos: database failover SKIPPED: ${database.failoverSkipped}`);
            return;
          }
          await database.failover();
          // Processes started from now on name the new primary as their direct address.
          Object.assign(env, database.env);
          return;
        case 'freeze': {
          // Mid-load: whatever it had open (a transaction holding row locks, the event horizon)
          // stays open until it runs again; the other processes must carry on meanwhile.
          const victim = (action.role === 'api' ? apis : workers)[action.index];
          if (!victim) return;
          counters.freezes++;
          victim.proc.kill('SIGSTOP');
          const frozenAt = Date.now();
          await new Promise((r) => setTimeout(r, action.ms));
          victim.proc.kill('SIGCONT');
          counters.frozenMs += Date.now() - frozenAt;
          return;
        }
        case 'next-day':
          return safety.nextDay();
      }
    };

    // The clients: each payment is retried with its own key until it gets a business answer,
    // exactly as a careful client of a payments API would.
    const keys = work.map((_, i) => `chaos-${options.seed}-${i}`);
    const outcome: Array<{ paymentId: string | null; code: string | null }> = [];
    const requestFor = (i: number) => {
      const item = at(work, i);
      return {
        idempotencyKey: keys[i],
        fromAccountId: at(accounts, item.account).accountId,
        amount: item.amount,
        recipient: { name: 'Chaos Recipient', sortCode: item.rejected ? '000000' : '112233', accountNumber: '12345678' },
        reference: `chaos ${i}`,
      };
    };
    const send = async (i: number, planned: number): Promise<{ paymentId: string | null; code: string | null }> => {
      const source = at(work, i).replayOf ?? i;
      const input = requestFor(source);
      const token = at(accounts, at(work, source).account).token;
      for (let attempt = 0; attempt < 60; attempt++) {
        try {
          const r = await graphql(
            apiUrl((planned + attempt) % 2),
            token,
            'mutation($i: SendPaymentInput!) { sendPayment(input: $i) { payment { id } errors { code } } }',
            { i: input },
          );
          const payload = r.data?.sendPayment as { payment: { id: string } | null; errors: Array<{ code: string }> } | undefined;
          if (payload) return { paymentId: payload.payment?.id ?? null, code: payload.errors[0]?.code ?? null };
        } catch {
          // connection refused, reset or timed out: the process or the database is restarting
        }
        counters.clientRetries++;
        await new Promise((r) => setTimeout(r, Math.min(100 * (attempt + 1), 1_000)));
      }
      problems.push(`payment ${i} never got an answer`);
      return { paymentId: null, code: 'NO_ANSWER' };
    };

    // Checkpoint k's actions start when payment `at` is taken and run alongside the traffic; the
    // traffic does not pass checkpoint k+1 until they are done. So faults and crashes always land
    // among payments in flight, at the same places for the same seed.
    const checkpoints: Array<Promise<void>> = [];
    const checkpoint = (k: number): Promise<void> => {
      checkpoints[k] ??= (k > 0 ? checkpoint(k - 1) : Promise.resolve()).then(async () => {
        for (const action of schedule[k]?.actions ?? []) await runAction(action);
      });
      return checkpoints[k];
    };
    let next = 0;
    let answered = 0;
    const client = async () => {
      while (next < work.length) {
        const i = next++;
        const reached = schedule.filter((c) => c.at <= i).length - 1;
        if (reached >= 0) {
          if (reached > 0) await checkpoint(reached - 1);
          void checkpoint(reached);
        }
        // Replays wait for the payment they repeat, so they can be checked against it.
        const original = at(work, i).replayOf;
        if (original !== null) while (outcome[original] === undefined) await new Promise((r) => setTimeout(r, 20));
        outcome[i] = await send(i, i);
        answered++;
        if (answered % Math.max(1, Math.floor(work.length / 10)) === 0) log(`  ${answered}/${work.length} payments answered`);
      }
    };
    let trafficDone = false;
    const scenarios = safety.run(
      safetyWork,
      () => answered,
      () => trafficDone,
    );
    await Promise.all(Array.from({ length: options.concurrency ?? 16 }, client));
    trafficDone = true;
    await scenarios;
    await checkpoint(schedule.length - 1);

    for (let i = 0; i < work.length; i++) {
      const original = at(work, i).replayOf;
      if (original === null) continue;
      counters.replaysChecked++;
      if (outcome[i]?.paymentId !== outcome[original]?.paymentId || outcome[i]?.code !== outcome[original]?.code) {
        problems.push(
          `replay ${i} of ${original} answered ${JSON.stringify(outcome[i])}, the original ${JSON.stringify(outcome[original])}`,
        );
      }
    }

    // Lift the faults; every payment must now reach a terminal status (the operator reviews the
    // last held ones).
    log('  faults lifted; waiting for every payment to be reviewed and settled');
    await setFaults({});
    // The run's last day: every occurrence and scheduled payment due by then runs; then, later that
    // day, the holds the operator left expire.
    await safety.nextDay(FINAL_DAY);
    await new Promise((r) => setTimeout(r, 2 * REVIEW_EVERY_MS));
    await safety.expireLeftHolds();
    log(`  day +${FINAL_DAY} run, held payments left over expired (${elapsed()})`);
    // The runner's own reads and audit: on a direct connection to the (current) primary, as `npm run audit`.
    const prisma = createPrisma({ databaseUrl: database.directUrl(), poolSize: 2 });
    cleanups.push(() => prisma.$disconnect());
    const deadline = Date.now() + (options.settleDeadlineMs ?? 180_000);
    let pending = Number.POSITIVE_INFINITY;
    for (let round = 1; Date.now() < deadline; round++) {
      pending = await prisma.payment.count({ where: { status: { in: ['PENDING', 'HELD'] } } }).catch(() => Number.POSITIVE_INFINITY);
      if (pending === 0) break;
      // A hold the last expiry missed (its step retried after an error) expires on a later round.
      if (round % 20 === 0) await safety.expireLeftHolds();
      await new Promise((r) => setTimeout(r, 250));
    }
    reviewing = false;
    await reviewer;
    log(`  ${pending === 0 ? 'every payment settled' : `${pending} payments still PENDING or HELD`} (${elapsed()})`);
    if (pending !== 0) problems.push(`${pending} payments still PENDING or HELD after the deadline`);

    // Every event of the accounts with an endpoint has arrived, signed (retries may still be due).
    const hooked = [...secrets.keys()];
    const owed = async () =>
      (await Promise.all(hooked.map((accountId) => readEvents(prismaSql(prisma), { after: START, limit: 100_000, accountId })))).flat();
    let missing: string[] = [];
    const webhookDeadline = Date.now() + 60_000;
    while (Date.now() < webhookDeadline) {
      missing = (await owed().catch(() => [{ id: 'unreadable' }])).map((e) => e.id).filter((id) => !arrived.get(id)?.valid);
      if (missing.length === 0) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const webhookEvents = (await owed()).length;
    if (missing.length > 0)
      problems.push(`${missing.length} webhook events never arrived with a valid signature, e.g. ${missing.slice(0, 3).join(', ')}`);
    const invalid = [...arrived.values()].reduce((n, a) => n + a.invalid, 0);
    if (invalid > 0) problems.push(`${invalid} webhook requests had an invalid signature`);
    const webhookRequests = [...arrived.values()].reduce((n, a) => n + a.valid + a.invalid, 0);

    // Every credit read from the provider's feed and resolved; every return the provider made applied.
    const providerGet = async (path: string) => (await fetch(`${providerUrl}${path}`, { headers: { 'x-api-key': API_KEY } })).json();
    let unresolved = '';
    while (Date.now() < deadline + 60_000) {
      const returnedThere = ((await providerGet('/admin/payments')) as Array<{ idempotencyKey: string; returnCode: string | null }>).filter(
        (p) => p.returnCode,
      );
      const [recorded, returning, returnedHere] = await Promise.all([
        prisma.providerCredit.count(),
        prisma.providerCredit.count({ where: { outcome: 'RETURNING' } }),
        prisma.payment.count({ where: { status: 'RETURNED' } }),
      ]).catch(() => [0, 0, 0]);
      unresolved =
        recorded === counters.creditsSent && returning === 0 && returnedHere === returnedThere.length
          ? ''
          : `credits recorded ${recorded}/${counters.creditsSent}, ${returning} still being returned; returns applied ${returnedHere}/${returnedThere.length}`;
      if (unresolved === '') break;
      await new Promise((r) => setTimeout(r, 250));
    }
    if (unresolved !== '') problems.push(`the provider's events were not all applied: ${unresolved}`);
    sampling = false;
    await sampler;
    if (samples.negative > 0) problems.push(`${samples.negative} negative balances sampled`);

    // Every followed stream, exactly: each event once, in order, whatever restarted meanwhile.
    const streamProblems: string[] = [];
    let eventsFollowed = 0;
    for (const [i, account] of followed.entries()) {
      const truth = await accountEventIds(apiUrl(0), account.token, account.accountId);
      const follower = followers[i];
      if (!follower) continue;
      const until = Date.now() + 30_000;
      while (follower.seen.length < truth.length && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      eventsFollowed += follower.seen.length;
      streamProblems.push(...compareStreams(follower.seen, truth).map((p) => `account ${account.accountId} event stream: ${p}`));
    }
    await Promise.all(followers.map((f) => f.stop()));
    problems.push(...streamProblems);

    // On the runner's clock, at its last day: nothing SCHEDULED or owed by a standing order may be
    // due by then (no grace: that day's runs are done).
    log(`  streams, webhooks and provider events checked; auditing (${elapsed()})`);
    const report = await audit({
      prisma,
      provider: { url: providerUrl, apiKey: API_KEY },
      dailyLimit: DAILY_PAYMENT_LIMIT,
      clock: safety.clock,
      scheduledGraceSeconds: 0,
    });
    // The run's London day (or days) reconciled with the provider's settlement report: no break.
    const reconciledDays = [...new Set([londonToday({ now: () => new Date(started) }), londonToday({ now: () => new Date() })])];
    let breaks = 0;
    for (const date of reconciledDays) {
      const answer = await graphql(apiUrl(0), operator, 'mutation($d: Date!) { reconcile(date: $d) { kind providerReference } }', {
        d: date,
      });
      const found = answer.data?.reconcile as Array<{ kind: string; providerReference: string }> | undefined;
      if (!found) problems.push(`reconciling ${date} failed: ${JSON.stringify(answer.errors)}`);
      for (const b of found ?? []) problems.push(`reconciliation break on ${date}: ${b.kind} ${b.providerReference}`);
      breaks += found?.length ?? 0;
    }
    const [reviewed] = await prisma.$queryRaw<{ approved: bigint; rejected: bigint }[]>`
      SELECT count(*) FILTER (WHERE action = 'approvePayment') AS approved, count(*) FILTER (WHERE action = 'rejectPayment') AS rejected
      FROM operator_actions`;
    if (Number(reviewed?.approved ?? 0) !== counters.approved || Number(reviewed?.rejected ?? 0) !== counters.rejected) {
      // An answer lost to a restart after its commit is the one way these can differ: the log is the truth.
      log(
        `  note: ${counters.approved}/${counters.rejected} reviews answered, ${reviewed?.approved}/${reviewed?.rejected} in the action log`,
      );
    }
    // Each hold's outcome against the operator's log is the audit's (every HELD payment has the one
    // decision its history shows); here, that there were holds at all.
    const heldAtStart = await prisma.paymentEvent.count({ where: { previousStatus: null, status: 'HELD' } });
    if (heldAtStart === 0 && work.some((w) => w.amount >= REVIEW_THRESHOLD))
      problems.push('no payment was HELD, though some were over REVIEW_THRESHOLD');
    // Money is conserved: what the accounts hold is what was deposited and credited, less what is
    // at the provider and not returned (nothing is PENDING or HELD by now).
    const [money] = await prisma.$queryRaw<{ balances: bigint; credited: bigint }[]>`
      SELECT (SELECT coalesce(sum(balance), 0) FROM accounts)::bigint AS balances,
        (SELECT coalesce(sum(amount), 0) FROM provider_credits WHERE outcome = 'CREDITED')::bigint AS credited`;
    const sent = ((await providerGet('/admin/payments')) as Array<{ amount: number; returnCode: string | null }>)
      .filter((p) => !p.returnCode)
      .reduce((sum, p) => sum + BigInt(p.amount), 0n);
    const expectedBalances = BigInt(ACCOUNTS * FUNDING) + (money?.credited ?? 0n) - sent;
    const conserved = pending === 0 && money?.balances === expectedBalances;
    if (pending === 0 && !conserved)
      problems.push(`balances add up to ${money?.balances}, but deposits and credits less what the provider holds are ${expectedBalances}`);
    const byStatus = await prisma.payment.groupBy({ by: ['status'], _count: true });
    const count = (s: string) => byStatus.find((r) => r.status === s)?._count ?? 0;
    const refusals = outcome.filter((o) => o.code === 'INSUFFICIENT_FUNDS').length;

    const rows: Array<[string, string | number]> = [
      ['seed / schedule digest', `${options.seed} / ${digest}`],
      ['payments requested (of which replays)', `${work.length} (${counters.replaysChecked})`],
      ['payments COMPLETED', count('COMPLETED')],
      ['payments CANCELLED (refunded)', count('CANCELLED')],
      ['payments FAILED (refunded)', count('FAILED')],
      ['payments PENDING or HELD at the end', count('PENDING') + count('HELD')],
      [
        'payments HELD on creation: approved / rejected by the operator (review retries)',
        `${heldAtStart}: ${reviewed?.approved ?? 0} / ${reviewed?.rejected ?? 0} (${counters.reviewRetries})`,
      ],
      ...(await safetyRows(prisma, safety.counters, REVIEW_THRESHOLD)),
      [
        'money conserved: balances = deposits + credits - at the provider',
        `${money?.balances} = ${expectedBalances}: ${conserved ? 'ok' : 'VIOLATED'}`,
      ],
      ['payments RETURNED by the recipient bank (returnRate)', count('RETURNED')],
      [
        'inbound credits sent (to unknown accounts): credited / returned',
        `${counters.creditsSent} (${counters.creditsToUnknown}): ${await prisma.providerCredit.count({ where: { outcome: 'CREDITED' } })} / ${await prisma.providerCredit.count({ where: { outcome: 'RETURNED' } })}`,
      ],
      ['refused: INSUFFICIENT_FUNDS', refusals],
      ['provider fault settings applied', counters.faultChanges],
      ['workers SIGKILLed and restarted', counters.workerKills],
      ['API processes restarted', counters.apiRestarts],
      ['PostgreSQL restarts', counters.postgresRestarts],
      database.row(),
      ['processes frozen (SIGSTOP ... SIGCONT), seconds frozen', `${counters.freezes}, ${(counters.frozenMs / 1000).toFixed(1)} s`],
      ['client retries (same key)', counters.clientRetries],
      ['unexpected process exits', counters.unexpectedExits],
      ['balance samples (negative seen)', `${samples.count} (${samples.negative}), lowest ${samples.min}`],
      [
        'event streams followed over WebSocket (reconnects): exactly once, in order',
        `${followed.length} accounts, ${eventsFollowed} events (${followers.reduce((n, f) => n + f.reconnects, 0)}): ${streamProblems.length === 0 ? 'ok' : 'VIOLATED'}`,
      ],
      [
        `webhook events delivered (${WEBHOOK_ACCOUNTS} accounts; requests, repeats included)`,
        `${webhookEvents - missing.length}/${webhookEvents} (${webhookRequests}), invalid signatures ${invalid}`,
      ],
      [
        'replays answered like their original',
        `${counters.replaysChecked - problems.filter((p) => p.startsWith('replay')).length}/${counters.replaysChecked}`,
      ],
      ...report.checks.map((c): [string, string] => [
        `invariant: ${c.name}`,
        c.violations.length === 0 ? `ok (${c.checked})` : `VIOLATED x${c.violations.length}`,
      ]),
      ...report.figures.map((f): [string, string] => [
        `figure: ${f.name}`,
        `${f.value.toFixed(1)} ${f.unit} (flagged above ${f.threshold})`,
      ]),
      ["reconciliation with the provider's settlement report: breaks", `${breaks} (${reconciledDays.join(', ')})`],
      ['duration', `${Math.round((Date.now() - started) / 1000)} s`],
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    const table = [
      `| ${'what'.padEnd(width)} | value |`,
      `| ${'-'.repeat(width)} | ----- |`,
      ...rows.map(([k, v]) => `| ${k.padEnd(width)} | ${v} |`),
    ].join('\n');
    const ok = report.ok && problems.length === 0;
    return {
      ok,
      table: ok ? table : `${table}\n\n${formatAudit(report)}\n${problems.map((p) => `PROBLEM: ${p}`).join('\n')}`,
      audit: report,
      problems,
    };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await database.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
