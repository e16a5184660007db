import { TZDate } from '@date-fns/tz';
// One module each, not the package's index: the index loads every one of date-fns's ~250 functions
// (and `format` alone some 35 more, locales included), a noticeable part of a process's start-up.
import { addDays } from 'date-fns/addDays';
import { addMonths } from 'date-fns/addMonths';

/**
 * Time and the bank's calendar. Every service that decides a date (the day a scheduled payment
 * runs, when a standing order is due) is given a `Clock` rather than reading the system time, so
 * tests can move it. Calendar dates are `YYYY-MM-DD` strings in Europe/London; calendar arithmetic
 * (a week later, a month later with month-end clamping) is plain-date arithmetic, and only "today"
 * and "when does that day start" involve the time zone (and so daylight saving).
 */

export interface Clock {
  now(): Date;
}

/** The real time. */
export const systemClock: Clock = { now: () => new Date() };

export const BANK_TIME_ZONE = 'Europe/London';

/** A calendar date, `YYYY-MM-DD`. */
export type CalendarDate = string;

export type Frequency = 'WEEKLY' | 'MONTHLY';

const DATE_SHAPE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** `date` written YYYY-MM-DD in its own time zone (a TZDate's fields are its zone's). */
function ymd(date: Date): CalendarDate {
  const pad = (n: number, width: number) => String(n).padStart(width, '0');
  return `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1, 2)}-${pad(date.getDate(), 2)}`;
}

function parts(date: CalendarDate): [number, number, number] {
  const match = DATE_SHAPE.exec(date);
  if (!match) throw new Error(`not a calendar date: ${date}`);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/** True for a real calendar date written `YYYY-MM-DD` (no 2026-02-30). */
export function isCalendarDate(value: string): boolean {
  if (!DATE_SHAPE.test(value)) return false;
  const [y, m, d] = parts(value);
  if (y < 1900 || y > 9999) return false;
  return ymd(new TZDate(y, m - 1, d, 'UTC')) === value;
}

/**
 * The London day last answered, as the instants it spans, [start, end) in ms since the epoch: every
 * payment asks, nearly always about the day of the last one, and a time-zone conversion costs tens
 * of microseconds. An instant inside the span is on that day by definition of the span, whatever
 * order instants are asked in; any other instant computes its day and span afresh.
 */
let lastLondonDay: { start: number; end: number; day: CalendarDate } | null = null;

/** Today in London, by `clock`. */
export function londonToday(clock: Clock): CalendarDate {
  const at = clock.now().getTime();
  if (lastLondonDay && at >= lastLondonDay.start && at < lastLondonDay.end) return lastLondonDay.day;
  const day = ymd(new TZDate(at, BANK_TIME_ZONE));
  lastLondonDay = { start: startOfLondonDay(day).getTime(), end: startOfLondonDay(addCalendarDays(day, 1)).getTime(), day };
  return day;
}

/** The instant `date` begins in London (midnight, GMT or BST as it falls). */
export function startOfLondonDay(date: CalendarDate): Date {
  const [y, m, d] = parts(date);
  return new Date(new TZDate(y, m - 1, d, BANK_TIME_ZONE).getTime());
}

/** `date` plus `days` calendar days. */
export function addCalendarDays(date: CalendarDate, days: number): CalendarDate {
  const [y, m, d] = parts(date);
  return ymd(addDays(new TZDate(y, m - 1, d, 'UTC'), days));
}

/**
 * The `n`th occurrence (0 = the first) of a schedule starting on `first`. Monthly occurrences are
 * counted from the first date, not from each other, so a 31st becomes the last day of a shorter
 * month (30 April, 28 or 29 February) and returns to the 31st when the month has one.
 */
export function occurrenceDate(first: CalendarDate, frequency: Frequency, n: number): CalendarDate {
  const [y, m, d] = parts(first);
  const start = new TZDate(y, m - 1, d, 'UTC');
  return ymd(frequency === 'WEEKLY' ? addDays(start, 7 * n) : addMonths(start, n));
}

/** Seconds from `clock`'s now until `date` begins in London; 0 when it has begun. */
export function secondsUntilDay(clock: Clock, date: CalendarDate): number {
  return Math.max(0, Math.ceil((startOfLondonDay(date).getTime() - clock.now().getTime()) / 1000));
}

/** A `Date` at UTC midnight (how Prisma reads a `date` column) as a calendar date. */
export function calendarDateOf(value: Date): CalendarDate {
  return value.toISOString().slice(0, 10);
}
