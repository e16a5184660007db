import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openDatabase } from '../src/db/prisma.ts';
import { createTestDatabase } from './helpers.ts';

/**
 * `transaction` hands the hot path's statement the interactive transaction's own connection. It
 * must be that transaction (what it writes commits or rolls back with it) and give the rows
 * Prisma's raw queries would, so the code reading them cannot tell the two apart.
 */

let database: Awaited<ReturnType<typeof createTestDatabase>>;
let db: Database;
const seen: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  db = openDatabase({ databaseUrl: database.url, poolSize: 3, onQuery: (sql) => seen.push(sql) });
  await db.prisma.$executeRawUnsafe('CREATE TABLE transaction_sql_probe (n int PRIMARY KEY)');
});

afterAll(async () => {
  await db?.prisma.$disconnect();
  await database?.drop();
});

const probes = async () =>
  (await db.prisma.$queryRawUnsafe<{ n: number }[]>('SELECT n FROM transaction_sql_probe ORDER BY n')).map((r) => r.n);

describe('a transaction with sql on its own connection', () => {
  it('runs sql inside the transaction: the same transaction id, and a rollback undoes what it wrote', async () => {
    const [viaSql, viaPrisma] = await db.transaction(async (tx, sql) => {
      const [mine] = await sql<{ t: string }>('SELECT txid_current()::text AS t', []);
      const [theirs] = await tx.$queryRawUnsafe<{ t: string }[]>('SELECT txid_current()::text AS t');
      return [mine?.t, theirs?.t];
    });
    expect(viaSql).toBeDefined();
    expect(viaSql).toBe(viaPrisma);

    await db.transaction(async (_tx, sql) => {
      await sql('INSERT INTO transaction_sql_probe (n) VALUES ($1)', [1]);
    });
    await expect(
      db.transaction(async (_tx, sql) => {
        await sql('INSERT INTO transaction_sql_probe (n) VALUES ($1)', [2]);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await probes()).toEqual([1]);
  });

  it('keeps each concurrent transaction on its own connection', async () => {
    const pids = await Promise.all(
      Array.from({ length: 3 }, () =>
        db.transaction(async (tx, sql) => {
          const [mine] = await sql<{ pid: number }>('SELECT pg_backend_pid() AS pid, pg_sleep(0.05)::text', []);
          const [theirs] = await tx.$queryRawUnsafe<{ pid: number }[]>('SELECT pg_backend_pid() AS pid');
          expect(mine?.pid).toBe(theirs?.pid);
          return mine?.pid;
        }),
      ),
    );
    expect(new Set(pids).size).toBe(3);
  });

  it("gives the types Prisma's raw queries give, and shows its statements to onQuery", async () => {
    const text = `SELECT 9007199254740993::bigint AS big, NULL::bigint AS none, 7::int AS small, 'x'::text AS word,
      '2026-03-29'::date AS day, '2026-03-29 01:30:00.123+01'::timestamptz AS at, gen_random_uuid() IS NOT NULL AS yes,
      '{"a": [1, "b"]}'::jsonb AS doc, $1::bigint AS param, $2::timestamptz AS param_at`;
    const params = [12n, new Date('2026-12-07T21:00:00.5Z')];
    seen.length = 0;
    const [viaSql, viaPrisma] = await db.transaction(async (tx, sql) => [
      await sql(text, params),
      await tx.$queryRawUnsafe(text, ...params),
    ]);
    expect(viaSql).toEqual(viaPrisma);
    expect(viaSql).toEqual([
      {
        big: 9007199254740993n,
        none: null,
        small: 7,
        word: 'x',
        day: new Date('2026-03-29T00:00:00.000Z'),
        at: new Date('2026-03-29T00:30:00.123Z'),
        yes: true,
        doc: { a: [1, 'b'] },
        param: 12n,
        param_at: new Date('2026-12-07T21:00:00.500Z'),
      },
    ]);
    expect(seen.filter((s) => s === text)).toHaveLength(2);
  });
});
