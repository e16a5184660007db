import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.ts';
import { connectionOptions, isDatabaseUnavailable } from '../src/db/connection.ts';
import { applyRoleTimeouts } from '../src/db/migrate.ts';
import { createTestDatabase } from './helpers.ts';

/** How the service's pools connect (src/db/connection.ts), and the settings behind it. */
describe('database session settings', () => {
  it('takes DATABASE_URL for a transaction pooler when DIRECT_DATABASE_URL is set, and drops named statements there', () => {
    const direct = loadConfig({ DATABASE_URL: 'postgresql://db/payments' });
    expect(direct.database).toMatchObject({ pooled: false, preparedStatements: true });
    expect(direct.directDatabaseUrl).toBe('postgresql://db/payments');
    expect(direct.database.timeouts).toEqual({ idleInTransactionMs: 15_000, lockMs: 5_000, statementMs: 30_000 });

    const pooled = loadConfig({ DATABASE_URL: 'postgresql://bouncer:6432/payments', DIRECT_DATABASE_URL: 'postgresql://db/payments' });
    expect(pooled.database).toMatchObject({ pooled: true, preparedStatements: false });
    expect(pooled.directDatabaseUrl).toBe('postgresql://db/payments');
    expect(loadConfig({ DATABASE_POOL_MODE: 'transaction' }).database.pooled).toBe(true);
  });

  it('refuses named statements through a transaction pooler, and a lock timeout not below the idle timeout', () => {
    expect(() => loadConfig({ DATABASE_POOL_MODE: 'transaction', DATABASE_PREPARED_STATEMENTS: 'true' })).toThrow(
      /DATABASE_PREPARED_STATEMENTS/,
    );
    expect(() => loadConfig({ DATABASE_LOCK_TIMEOUT_MS: '15000' })).toThrow(ConfigError);
    expect(() => loadConfig({ DATABASE_LOCK_TIMEOUT_MS: '15000' })).toThrow(/DATABASE_LOCK_TIMEOUT_MS/);
    expect(loadConfig({ DATABASE_LOCK_TIMEOUT_MS: '0', DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: '0' }).database.timeouts.lockMs).toBe(0);
  });

  it('puts nothing but application_name in the startup packet through a pooler, and the timeouts there on a direct connection', () => {
    const pooled = connectionOptions(loadConfig({ DATABASE_POOL_MODE: 'transaction' }).database, { applicationName: 'payments-api' });
    expect(pooled).toEqual({
      application_name: 'payments-api',
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
    });
    const direct = connectionOptions(loadConfig({}).database, { applicationName: 'payments-events', statementMs: 5_000 });
    expect(direct).toMatchObject({
      statement_timeout: 5_000,
      lock_timeout: 5_000,
      idle_in_transaction_session_timeout: 15_000,
      keepAlive: true,
    });
  });

  it('makes the timeouts the role defaults in the database, for every new session whatever it connects through', async () => {
    const db = await createTestDatabase();
    try {
      await applyRoleTimeouts(db.url, { idleInTransactionMs: 12_000, lockMs: 4_000, statementMs: 25_000 });
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        const { rows } = await client.query(
          `SELECT current_setting('idle_in_transaction_session_timeout') AS idle, current_setting('lock_timeout') AS lock,
                  current_setting('statement_timeout') AS statement`,
        );
        expect(rows[0]).toEqual({ idle: '12s', lock: '4s', statement: '25s' });
      } finally {
        await client.end();
      }
    } finally {
      await db.drop();
    }
  });

  it('recognises an unreachable database in the forms node-postgres and Prisma give it', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    expect(isDatabaseUnavailable(refused)).toBe(true);
    expect(isDatabaseUnavailable(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }))).toBe(
      true,
    );
    expect(isDatabaseUnavailable(Object.assign(new Error('x'), { code: '08006' }))).toBe(true);
    expect(isDatabaseUnavailable(new Error('wrapped', { cause: refused }))).toBe(true);
    // Prisma's known request error around the driver's: the SQLSTATE is in meta.driverAdapterError.cause.
    const prisma = Object.assign(new Error('Raw query failed'), {
      code: 'P2010',
      meta: { driverAdapterError: { name: 'DriverAdapterError', cause: { originalCode: '55P03', kind: 'postgres' } } },
    });
    expect(isDatabaseUnavailable(prisma)).toBe(true);
    expect(isDatabaseUnavailable(Object.assign(new Error('x'), { code: 'P1001' }))).toBe(true);
    // A bug is not an outage.
    expect(isDatabaseUnavailable(Object.assign(new Error('duplicate key'), { code: '23505' }))).toBe(false);
    expect(isDatabaseUnavailable(new TypeError('undefined is not a function'))).toBe(false);
  });
});
