import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isCalendarDate, londonToday, occurrenceDate, secondsUntilDay, startOfLondonDay } from '../src/calendar.ts';
import { ConfigError, loadConfig } from '../src/config.ts';
import { londonDay } from '../src/payments/limits.ts';
import { fingerprintOf } from '../src/payments/payment-service.ts';
import { parseInput, sendPaymentInput } from '../src/validation.ts';

describe('the London day of the daily limit', () => {
  it('turns at midnight in London: 00:00 UTC in winter, 23:00 UTC in summer, across both clock changes', () => {
    expect(londonDay(new Date('2026-01-15T23:59:59.999Z'))).toBe('2026-01-15');
    expect(londonDay(new Date('2026-01-16T00:00:00.000Z'))).toBe('2026-01-16');
    expect(londonDay(new Date('2026-07-01T22:59:59.999Z'))).toBe('2026-07-01');
    expect(londonDay(new Date('2026-07-01T23:00:00.000Z'))).toBe('2026-07-02');
    // Clocks go forward on 29 March 2026 and back on 25 October 2026.
    expect(londonDay(new Date('2026-03-28T23:30:00.000Z'))).toBe('2026-03-28');
    expect(londonDay(new Date('2026-03-29T23:30:00.000Z'))).toBe('2026-03-30');
    expect(londonDay(new Date('2026-10-24T23:30:00.000Z'))).toBe('2026-10-25');
    expect(londonDay(new Date('2026-10-25T23:30:00.000Z'))).toBe('2026-10-25');
  });
});

describe('the idempotency fingerprint', () => {
  const base = {
    idempotencyKey: 'k',
    fromAccountId: '00000000-0000-4000-8000-000000000001',
    amount: 100,
    recipient: { name: 'Grace', sortCode: '123456', accountNumber: '12345678' },
    reference: null,
    executeOn: null,
  };

  it('is the same for the same payment whatever the key, and differs for any other parameter', () => {
    expect(fingerprintOf({ ...base, idempotencyKey: 'other' })).toBe(fingerprintOf(base));
    const variants = [
      { ...base, amount: 101 },
      { ...base, fromAccountId: '00000000-0000-4000-8000-000000000002' },
      { ...base, recipient: { ...base.recipient, name: 'Grace H' } },
      { ...base, recipient: { ...base.recipient, sortCode: '123457' } },
      { ...base, recipient: { ...base.recipient, accountNumber: '12345679' } },
      { ...base, reference: 'x' },
      { ...base, executeOn: '2030-01-02' },
      { ...base, executeOn: '2030-01-03' },
    ];
    for (const v of variants) expect(fingerprintOf(v)).not.toBe(fingerprintOf(base));
  });

  it('is unchanged for a payment without executeOn, so keys used before scheduled payments existed still replay', () => {
    const before = createHash('sha256')
      .update(
        JSON.stringify([
          base.fromAccountId,
          base.amount,
          base.recipient.name,
          base.recipient.sortCode,
          base.recipient.accountNumber,
          base.reference,
        ]),
      )
      .digest('hex');
    expect(fingerprintOf(base)).toBe(before);
  });

  it('does not let fields run into each other', () => {
    const a = { ...base, recipient: { ...base.recipient, name: 'ab' }, reference: 'c' };
    const b = { ...base, recipient: { ...base.recipient, name: 'a' }, reference: 'bc' };
    expect(fingerprintOf(a)).not.toBe(fingerprintOf(b));
  });
});

describe('money input', () => {
  const valid = (amount: unknown) =>
    parseInput(sendPaymentInput, {
      idempotencyKey: 'k',
      fromAccountId: '00000000-0000-4000-8000-000000000001',
      amount,
      recipient: { name: 'G', sortCode: '123456', accountNumber: '12345678' },
    }).ok;

  it('accepts exactly the whole numbers of pence from 1 to 100,000,000', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 100_000_000 }), (n) => valid(n)));
    fc.assert(fc.property(fc.integer({ min: -1e12, max: 0 }), (n) => !valid(n)));
    fc.assert(fc.property(fc.integer({ min: 100_000_001, max: Number.MAX_SAFE_INTEGER }), (n) => !valid(n)));
    fc.assert(fc.property(fc.double({ noInteger: true }), (n) => !valid(n)));
    fc.assert(fc.property(fc.string(), (s) => !valid(s)));
  });
});

describe('configuration', () => {
  it('uses the contract defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ port: 4000, providerPort: 4100, logLevel: 'info', retry: { limit: 8 } });
    expect(config.databaseUrl).toBeUndefined();
  });

  it('names every bad variable', () => {
    expect(() => loadConfig({ PORT: 'eighty', PAYMENT_RETRY_LIMIT: '-1', LOG_LEVEL: 'loud' })).toThrow(ConfigError);
    try {
      loadConfig({ PORT: 'eighty', PAYMENT_RETRY_LIMIT: '-1', LOG_LEVEL: 'loud' });
    } catch (error) {
      expect((error as Error).message).toMatch(/PORT/);
      expect((error as Error).message).toMatch(/PAYMENT_RETRY_LIMIT/);
      expect((error as Error).message).toMatch(/LOG_LEVEL/);
    }
  });

  it('refuses to start in production without a 32-byte AUTH_JWT_SECRET', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/AUTH_JWT_SECRET/);
    expect(() => loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: 'short' })).toThrow(/AUTH_JWT_SECRET/);
    expect(loadConfig({ NODE_ENV: 'production', AUTH_JWT_SECRET: 'x'.repeat(32), WEBHOOK_SECRET_KEY: 'ab'.repeat(32) }).jwtSecret).toBe(
      'x'.repeat(32),
    );
  });

  it('refuses a DATABASE_URL that is not PostgreSQL and a retry ceiling below the first delay', () => {
    expect(() => loadConfig({ DATABASE_URL: 'mysql://x' })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({ PAYMENT_RETRY_DELAY_SECONDS: '10', PAYMENT_RETRY_DELAY_MAX_SECONDS: '5' })).toThrow(
      /PAYMENT_RETRY_DELAY_MAX_SECONDS/,
    );
  });
});

describe('the London calendar', () => {
  it('pays a monthly order on the 31st on the last day of shorter months, and on the 31st again when there is one', () => {
    const dates = Array.from({ length: 6 }, (_, n) => occurrenceDate('2027-12-31', 'MONTHLY', n));
    expect(dates).toEqual(['2027-12-31', '2028-01-31', '2028-02-29', '2028-03-31', '2028-04-30', '2028-05-31']);
    expect(occurrenceDate('2027-01-29', 'MONTHLY', 1)).toBe('2027-02-28');
  });

  it('pays a weekly order every seven calendar days across the change to summer time', () => {
    expect(Array.from({ length: 3 }, (_, n) => occurrenceDate('2027-03-21', 'WEEKLY', n))).toEqual([
      '2027-03-21',
      '2027-03-28',
      '2027-04-04',
    ]);
  });

  it('knows which day it is in London, and when a day begins there in winter and in summer', () => {
    expect(londonToday({ now: () => new Date('2027-06-30T23:30:00Z') })).toBe('2027-07-01');
    expect(londonToday({ now: () => new Date('2027-12-31T23:30:00Z') })).toBe('2027-12-31');
    expect(startOfLondonDay('2027-07-01').toISOString()).toBe('2027-06-30T23:00:00.000Z');
    expect(startOfLondonDay('2027-12-01').toISOString()).toBe('2027-12-01T00:00:00.000Z');
    expect(secondsUntilDay({ now: () => new Date('2027-06-30T22:59:58Z') }, '2027-07-01')).toBe(2);
    expect(secondsUntilDay({ now: () => new Date('2027-07-01T10:00:00Z') }, '2027-07-01')).toBe(0);
  });

  it('answers the London day of every instant alike, however instants are asked in turn', () => {
    const london = new Intl.DateTimeFormat('en-CA', { timeZone: 'Europe/London', year: 'numeric', month: '2-digit', day: '2-digit' });
    // Instants around the midnights and the summer-time changes of 2027, in any order, repeated.
    const edges = ['2027-03-27T23:59:59.999Z', '2027-03-28T00:00:00Z', '2027-03-28T00:59:59.999Z', '2027-03-28T01:00:00Z'];
    const edge = fc.oneof(
      fc.constantFrom(...edges.map((e) => Date.parse(e))),
      fc.integer({ min: Date.parse('2027-03-27T22:00:00Z'), max: Date.parse('2027-03-28T02:00:00Z') }),
      fc.integer({ min: Date.parse('2027-10-30T22:00:00Z'), max: Date.parse('2027-10-31T02:00:00Z') }),
      fc.integer({ min: Date.parse('2027-06-30T22:58:00Z'), max: Date.parse('2027-06-30T23:02:00Z') }),
    );
    fc.assert(
      fc.property(fc.array(edge, { minLength: 1, maxLength: 20 }), (instants) => {
        for (const at of instants) expect(londonToday({ now: () => new Date(at) })).toBe(london.format(at));
      }),
    );
  });

  it('accepts only real dates written YYYY-MM-DD', () => {
    expect(['2028-02-29', '2027-12-31'].every(isCalendarDate)).toBe(true);
    expect(['2027-02-29', '2027-13-01', '2027-1-01', '27-01-01', '2027-01-01T00:00:00Z', '', 'tomorrow'].some(isCalendarDate)).toBe(false);
  });
});
