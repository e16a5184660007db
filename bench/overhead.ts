import { randomBytes } from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import { signToken } from '../src/auth.ts';
import { loadConfig } from '../src/config.ts';
import { UNBOUNDED_SESSION } from '../src/db/connection.ts';
import { openDatabase } from '../src/db/prisma.ts';
import { freePort } from '../tools/free-port.ts';
import { startProcess } from '../tools/processes.ts';
import { cleanupOnSignals } from './cleanup.ts';
import { accountIdOf, customerIdOf, prepareDatabase, startBenchDatabase } from './database.ts';
import { BENCH_DAILY_LIMIT, benchApiEnv, cpuTimes } from './processes.ts';

/**
 * `node bench/overhead.ts`: what a payment's CPU is made of, in two measurements that the machine's
 * load moves little (CPU time, not rates; user and system time apart, from `/proc/PID/stat` and
 * `process.cpuUsage`):
 *
 * 1. The API as the bench runs it: CPU per request of `{ __typename }` (HTTP, Express, Apollo, the
 *    token check: what every request pays) and of `sendPayment`, at 8 and 32 closed loops, with
 *    tokens already verified once (a client's second request onwards).
 * 2. In this process, against the same database: the money transaction's shape with `pg` alone
 *    (`BEGIN`, a 24-column statement, `COMMIT`) against Prisma's interactive transaction around the
 *    same statement, through Prisma's raw query and (as sendPayment runs it) on the transaction's own
 *    connection, and a raw query through Prisma with 24 columns and with 6.
 */
const REQUESTS = Number(process.env.OVERHEAD_REQUESTS ?? 6_000);
const SENDERS = 2_000;
const log = (line: string) => process.stdout.write(`${line}\n`);

/** Runs `once` `total` times over `clients` concurrent loops. */
async function closedLoops(clients: number, total: number, once: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = 0; i < total / clients; i++) await once();
    }),
  );
  return (total / (performance.now() - started)) * 1000;
}

async function main(): Promise<void> {
  const cleanup = cleanupOnSignals(log);
  try {
    log(
      `load average at the start: ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    const config = loadConfig({ DATABASE_URL: process.env.DATABASE_URL, DAILY_PAYMENT_LIMIT: BENCH_DAILY_LIMIT });
    const db = await startBenchDatabase(config, log);
    cleanup.add('database', () => db.stop());
    await prepareDatabase(db.url, config);
    const secret = randomBytes(48).toString('base64url');
    const port = await freePort();
    const api = await startProcess(
      'bench/process-api.ts',
      benchApiEnv({ databaseUrl: db.url, port, jwtSecret: secret, webhookSecretKey: randomBytes(32).toString('hex') }),
      { url: `http://127.0.0.1:${port}/readyz` },
    );
    cleanup.add('API', () => api.stop());

    const url = `http://127.0.0.1:${port}/graphql`;
    const tokens = await Promise.all(
      Array.from({ length: SENDERS }, (_, i) => signToken({ role: 'customer', customerId: customerIdOf(i + 1) }, secret, 3600)),
    );
    let key = 0;
    const bodies: Record<string, (sender: number) => unknown> = {
      '{ __typename }': () => ({ query: '{ __typename }' }),
      sendPayment: (sender) => ({
        query: 'mutation($input: SendPaymentInput!) { sendPayment(input: $input) { payment { id status } errors { code } } }',
        variables: {
          input: {
            idempotencyKey: `overhead-${key++}`,
            fromAccountId: accountIdOf(sender + 1),
            amount: 100,
            recipient: { name: 'Grace Hopper', sortCode: '123456', accountNumber: '12345678' },
            reference: 'Overhead',
          },
        },
      }),
    };
    log('\n| API request | clients | user µs / request | system µs / request | requests/s |\n|---|---|---|---|---|');
    for (const clients of [8, 32]) {
      for (const [name, body] of Object.entries(bodies)) {
        const once = async () => {
          const sender = Math.floor(Math.random() * SENDERS);
          const response = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens[sender]}` },
            body: JSON.stringify(body(sender)),
          });
          const answer = (await response.json()) as { errors?: unknown; data?: { sendPayment?: { errors: unknown[] } } };
          if (answer.errors || (answer.data?.sendPayment?.errors.length ?? 0) > 0) throw new Error(JSON.stringify(answer));
        };
        // Warm-up: every token verified once, every statement prepared.
        await closedLoops(clients, SENDERS * 2, once);
        const before = cpuTimes(api.pid);
        const rate = await closedLoops(clients, REQUESTS, once);
        const after = cpuTimes(api.pid);
        const per = (seconds: number) => ((seconds * 1e6) / REQUESTS).toFixed(0);
        log(`| ${name} | ${clients} | ${per(after.user - before.user)} | ${per(after.system - before.system)} | ${rate.toFixed(0)} |`);
      }
    }
    await api.stop();

    // A connection lost while idle (the database stopping at the end) is logged, never an uncaught 'error'.
    const lost = (client: string) => (error: Error) => log(`${client}: connection lost: ${error.message}`);
    const pool = new pg.Pool({ connectionString: db.url, max: 8 });
    pool.on('error', lost('pg'));
    const { prisma, transaction } = openDatabase({
      databaseUrl: db.url,
      poolSize: 8,
      session: { ...UNBOUNDED_SESSION, preparedStatements: true },
      onError: lost('Prisma'),
    });
    cleanup.add('clients', async () => {
      await pool.end();
      await prisma.$disconnect();
    });
    const kinds = ['now()', `'x'::text`, '12345::bigint'];
    const columns = (n: number) => Array.from({ length: n }, (_, i) => `${kinds[i % 3]} AS c${i}`).join(', ');
    const wide = `SELECT $1::uuid AS id, ${columns(23)}`;
    const narrow = `SELECT $1::uuid AS id, ${columns(5)}`;
    const id = '00000000-0000-4000-8000-000000000001';
    const shapes: Array<[string, () => Promise<unknown>]> = [
      [
        'pg: BEGIN, 24 columns, COMMIT',
        async () => {
          const client = await pool.connect();
          try {
            await client.query('BEGIN');
            await client.query({ name: 'wide', text: wide, values: [id] });
            await client.query('COMMIT');
          } finally {
            client.release();
          }
        },
      ],
      ['Prisma: $transaction(tx => tx.$queryRawUnsafe(24 columns))', () => prisma.$transaction((tx) => tx.$queryRawUnsafe(wide, id))],
      // What sendPayment runs: Prisma's transaction, the statement on its own connection.
      ['openDatabase: transaction((tx, sql) => sql(24 columns))', () => transaction((_tx, sql) => sql(wide, [id]))],
      ['pg: 24 columns', () => pool.query({ name: 'wide', text: wide, values: [id] })],
      ['Prisma: $queryRawUnsafe, 24 columns', () => prisma.$queryRawUnsafe(wide, id)],
      ['Prisma: $queryRawUnsafe, 6 columns', () => prisma.$queryRawUnsafe(narrow, id)],
    ];
    log('\n| in this process, 8 concurrent | CPU µs (user + system) |\n|---|---|');
    for (const [name, once] of shapes) {
      const run = () => closedLoops(8, REQUESTS, async () => void (await once()));
      await run();
      const before = process.cpuUsage();
      await run();
      const used = process.cpuUsage(before);
      log(`| ${name} | ${((used.user + used.system) / REQUESTS).toFixed(0)} |`);
    }
    log(
      `\nload average at the end: ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    await cleanup.run();
  }
}

await main();
