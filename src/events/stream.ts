import { Repeater } from '@repeaterjs/repeater';
import { type PrismaClient, prismaSql } from '../db/prisma.ts';
import { type EventPosition, isAfter, START } from './cursor.ts';
import { type EventFeed, type FeedEvent, withPayments } from './feed.ts';
import { prunedThrough, readEvents } from './store.ts';

/**
 * One account's events for one subscriber: replayed from the database after a position, then
 * live from the process's feed; in order, each exactly once, with bounded memory.
 *
 * The listener is registered before the first read, and every event carries its position: an
 * event that arrives both ways is recognised and dropped, and one that arrives neither way cannot
 * exist (everything the feed delivered before the listener existed is below the horizon the
 * replay reads up to). Retention that passes the position while replaying ends the stream with
 * `EventsPrunedError`. A subscriber that falls more than `maxQueued` events behind stops queuing
 * and catches up from the database again, so a slow client costs rows in PostgreSQL, not memory.
 */
export interface StreamOptions {
  feed: EventFeed;
  prisma: PrismaClient;
  accountId: string;
  /** Replay after this position; null: only what happens from now on. */
  after: EventPosition | null;
  pageSize?: number;
  maxQueued?: number;
}

export function accountEventStream(options: StreamOptions): Repeater<FeedEvent> {
  const { feed, prisma, accountId } = options;
  const pageSize = options.pageSize ?? 200;
  const maxQueued = options.maxQueued ?? 1_000;
  const sql = prismaSql(prisma);

  return new Repeater<FeedEvent>(async (push, stop) => {
    const queue: FeedEvent[] = [];
    let overflowed = false;
    let signal: (() => void) | null = null;
    const unsubscribe = feed.subscribe({ accountId }, (events) => {
      if (overflowed) return;
      queue.push(...events);
      if (queue.length > maxQueued) {
        queue.length = 0;
        overflowed = true;
      }
      signal?.();
    });
    let stopped = false;
    void stop.then(() => {
      stopped = true;
      signal?.();
    });

    let cursor = options.after ?? feed.position();
    let replaying = options.after !== null;
    try {
      while (!stopped) {
        if (overflowed) {
          overflowed = false;
          replaying = true;
        }
        if (replaying) {
          // Every page re-checks retention in its own statement: a prune that passes the cursor
          // mid-replay ends the stream with EventsPrunedError, never a silent gap.
          const page = await readEvents(sql, { after: cursor, limit: pageSize, accountId, refusePruned: true });
          if (page.length === 0) replaying = false;
          for (const event of withPayments(prisma, page)) {
            if (stopped) break;
            await push(event);
            cursor = event.position;
          }
          continue;
        }
        const next = queue.shift();
        if (!next) {
          await new Promise<void>((resolve) => {
            signal = resolve;
          });
          signal = null;
          continue;
        }
        if (!isAfter(next.position, cursor)) continue;
        await push(next);
        cursor = next.position;
      }
    } catch (error) {
      stop(error);
    } finally {
      unsubscribe();
    }
  });
}

/**
 * One account's events as the API serves them: a page of its history, how far retention has
 * deleted, and a stream (replay after a position, then live from the process's feed).
 */
export function createAccountEvents(deps: { feed: EventFeed; prisma: PrismaClient }) {
  const sql = prismaSql(deps.prisma);
  return {
    /**
     * At most `limit` events after `after` (from the start when null), oldest first; each one's
     * payment is read, in one query for the page, when first asked for. `EventsPrunedError` when
     * retention has passed `after` (checked in the same statement as the read).
     */
    page: async (accountId: string, after: EventPosition | null, limit: number): Promise<FeedEvent[]> =>
      withPayments(deps.prisma, await readEvents(sql, { after: after ?? START, limit, accountId, refusePruned: after !== null })),
    prunedThrough: (): Promise<EventPosition | null> => prunedThrough(sql),
    follow: (accountId: string, after: EventPosition | null): Repeater<FeedEvent> =>
      accountEventStream({ feed: deps.feed, prisma: deps.prisma, accountId, after }),
  };
}

export type AccountEvents = ReturnType<typeof createAccountEvents>;
