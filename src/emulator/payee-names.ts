/**
 * Confirmation of Payee in the emulator: the account holders' names "the recipient's bank" has on
 * record, and the fixed rule that compares a name given by a payer with the account holder's name
 * for that sort code and account number.
 *
 * The rule (also in the README's emulator section):
 * - Names are compared after normalising: lower case, `.`, `,` and `'` removed, runs of spaces
 *   made one, leading and trailing spaces dropped.
 * - The same normalised name as the account holder's: MATCH.
 * - Otherwise the same surname (last word) or at most 2 edits apart (Levenshtein, on the
 *   normalised names): CLOSE_MATCH, answered with the account holder's name.
 * - Otherwise, and for an account the emulator has no holder's name for: NO_MATCH.
 */

export type PayeeMatchResult = 'MATCH' | 'CLOSE_MATCH' | 'NO_MATCH';

/** The account holders' names the emulator starts with, by `sortCode:accountNumber`. */
export const ACCOUNT_HOLDER_NAMES: Readonly<Record<string, string>> = {
  '123456:12345678': 'Grace Hopper',
  '112233:12345678': 'Chaos Recipient',
  '203040:11112222': 'Ada Lovelace',
  '203040:33334444': 'Alan Turing',
};

export const accountKey = (sortCode: string, accountNumber: string) => `${sortCode}:${accountNumber}`;

const normalise = (name: string) => name.toLowerCase().replace(/[.,']/g, '').replace(/\s+/g, ' ').trim();

/** Edit distance (insertions, deletions, substitutions) between two strings. */
export function levenshtein(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The fixed rule: how `given` compares with the account holder's name (null: none on record for the account). */
export function matchPayeeName(given: string, holder: string | null): { result: PayeeMatchResult; matchedName: string | null } {
  if (holder === null) return { result: 'NO_MATCH', matchedName: null };
  const a = normalise(given);
  const b = normalise(holder);
  if (a === b) return { result: 'MATCH', matchedName: null };
  const surname = (s: string) => s.split(' ').at(-1) ?? '';
  if (surname(a) === surname(b) || levenshtein(a, b) <= 2) return { result: 'CLOSE_MATCH', matchedName: holder };
  return { result: 'NO_MATCH', matchedName: null };
}
