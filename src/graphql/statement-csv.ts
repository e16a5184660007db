import type { RequestHandler } from 'express';
import type { AccountService } from '../accounts/accounts.ts';
import { AuthError, type TokenVerifier } from '../auth.ts';
import { type LedgerReader, STATEMENT_CSV_COLUMNS, statementCsvLine, statementRange } from '../ledger/statements.ts';
import type { Logger } from '../logger.ts';

/** Entries read per query while the CSV is written. */
const CSV_PAGE = 1_000;

/**
 * `GET /accounts/:id/statement.csv?from=YYYY-MM-DD&to=YYYY-MM-DD`: the statement of `Account.statement`
 * as CSV (a header row of STATEMENT_CSV_COLUMNS, one row per entry, oldest first), with the same
 * bearer token as GraphQL. An account that is not the caller's is 404, like one that does not exist.
 */
export function statementCsvHandler(deps: {
  tokens: TokenVerifier;
  accounts: Pick<AccountService, 'visibleAccount'>;
  ledger: LedgerReader;
  logger: Logger;
}): RequestHandler<{ id: string }> {
  const fail = (res: Parameters<RequestHandler>[1], status: number, code: string, message: string, field?: string) =>
    res.status(status).json({ errors: [{ message, extensions: { code, ...(field ? { field: [field] } : {}) } }] });
  return async (req, res, next) => {
    try {
      let viewer: Awaited<ReturnType<TokenVerifier['fromHeader']>> = null;
      try {
        viewer = await deps.tokens.fromHeader(req.headers.authorization);
      } catch (error) {
        if (error instanceof AuthError) return fail(res, 401, 'UNAUTHENTICATED', `Unauthenticated: ${error.message}`);
        throw error;
      }
      if (!viewer) return fail(res, 401, 'UNAUTHENTICATED', 'Authentication required: send Authorization: Bearer <token>');
      const account = await deps.accounts.visibleAccount(viewer.viewer, req.params.id);
      if (!account) return fail(res, 404, 'NOT_FOUND', 'No such account');
      const from = typeof req.query.from === 'string' ? req.query.from : '';
      const to = typeof req.query.to === 'string' ? req.query.to : '';
      const parsed = statementRange(from, to);
      if (!parsed.ok) return fail(res, 400, 'BAD_USER_INPUT', parsed.error.message, parsed.error.field?.[0]);
      res.status(200);
      res.type('text/csv; charset=utf-8');
      res.set('content-disposition', `attachment; filename="statement-${account.accountNumber}-${from}-${to}.csv"`);
      res.set('cache-control', 'no-store');
      res.write(`${STATEMENT_CSV_COLUMNS.join(',')}\r\n`);
      let after: [string, string] | null = null;
      for (;;) {
        const rows = await deps.ledger.statementEntries(account.id, parsed.range, { after, limit: CSV_PAGE });
        const page = rows.slice(0, CSV_PAGE);
        if (page.length > 0) res.write(`${page.map(statementCsvLine).join('\r\n')}\r\n`);
        const last = page.at(-1);
        if (rows.length <= CSV_PAGE || !last) break;
        after = [last.at.toISOString(), last.id.toString()];
      }
      res.end();
    } catch (error) {
      deps.logger.error({ err: error, path: req.path }, 'statement CSV failed');
      if (res.headersSent) res.destroy();
      else next(error);
    }
  };
}
