/**
 * Positions in the payment event stream, and the opaque cursors clients hold.
 *
 * A position is (xid, seq): the id of the transaction that wrote the event, then the event's
 * sequence number. Readers only ever read below the visibility horizon (the oldest transaction
 * still running), so positions come out in an order no later commit can slip in front of
 * (docs/decisions/0006-durable-events-by-transaction-id.md).
 *
 * A cursor is the position as 32 hex digits (16 for each part): fixed width, so cursors sort as
 * strings in the same order as positions.
 */
export interface EventPosition {
  xid: bigint;
  seq: bigint;
}

/** Before every event. */
export const START: EventPosition = { xid: 0n, seq: 0n };

const HEX_PART = 16;
const CURSOR = /^[0-9a-f]{32}$/;

export function encodeCursor(position: EventPosition): string {
  return position.xid.toString(16).padStart(HEX_PART, '0') + position.seq.toString(16).padStart(HEX_PART, '0');
}

/** The position of a cursor, or null when it is not one of ours. */
export function decodeCursor(cursor: string): EventPosition | null {
  if (!CURSOR.test(cursor)) return null;
  return { xid: BigInt(`0x${cursor.slice(0, HEX_PART)}`), seq: BigInt(`0x${cursor.slice(HEX_PART)}`) };
}

export function comparePositions(a: EventPosition, b: EventPosition): number {
  if (a.xid !== b.xid) return a.xid < b.xid ? -1 : 1;
  if (a.seq !== b.seq) return a.seq < b.seq ? -1 : 1;
  return 0;
}

export const isAfter = (a: EventPosition, b: EventPosition) => comparePositions(a, b) > 0;
