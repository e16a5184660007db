import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';

/**
 * The in-browser IDE: GraphiQL with its editor and workers inlined into one page (from
 * @graphql-yoga/render-graphiql), plus our own fetcher (fetcher.js) and the graphql-ws browser
 * client, all served by this process. Nothing is loaded from the internet.
 */

/** The scripts the page loads before GraphiQL, by URL path. */
export const IDE_SCRIPTS = ['/ide/graphql-ws.js', '/ide/fetcher.js'] as const;

/** Reads the page's scripts: the graphql-ws browser build from node_modules, and our fetcher. */
export function readIdeAssets(): Record<(typeof IDE_SCRIPTS)[number], string> {
  const graphqlWsDir = path.dirname(createRequire(import.meta.url).resolve('graphql-ws/package.json'));
  return {
    '/ide/graphql-ws.js': readFileSync(path.join(graphqlWsDir, 'umd', 'graphql-ws.min.js'), 'utf8'),
    '/ide/fetcher.js': readFileSync(new URL('./fetcher.js', import.meta.url), 'utf8'),
  };
}

const WALKTHROUGH = `# Payments API: a walk-through. Your token goes in the Headers tab below:
#   { "Authorization": "Bearer <token>" }   (npm start prints demo tokens)
# It is used for queries, mutations and the subscription's WebSocket alike.
# Put the cursor in an operation and press ▶ (or Ctrl-Enter) to run it.

# 1. Who am I, and what do I hold?
query Me {
  me {
    name
    accounts { id name sortCode accountNumber balance }
  }
}

# 2. Send money from an account of yours (npm start fills in the demo customer's; otherwise copy an
#    id from step 1 over PASTE-ACCOUNT-ID wherever it appears).
#    Re-running with the same idempotencyKey returns the same payment, never a second debit.
#    A recipient sort code of 000000 is rejected by the provider: the payment ends CANCELLED
#    and the money comes back.
mutation Send {
  sendPayment(input: {
    idempotencyKey: "walkthrough-1"
    fromAccountId: "PASTE-ACCOUNT-ID"
    amount: 1250
    recipient: { name: "Grace Hopper", sortCode: "12-34-56", accountNumber: "12345678" }
    reference: "Lunch"
  }) {
    payment { id status amount }
    errors { code message field }
  }
}

# 2b. Pay later: a date in the future (London) makes a SCHEDULED payment. No money moves until
#     that day; then it is sent like any other (or FAILED with INSUFFICIENT_FUNDS if the balance
#     is short that day). Put a date after today (at most a year ahead) in executeOn.
mutation Schedule {
  sendPayment(input: {
    idempotencyKey: "walkthrough-scheduled-1"
    fromAccountId: "PASTE-ACCOUNT-ID"
    amount: 2000
    recipient: { name: "Ada Lovelace", sortCode: "20-00-00", accountNumber: "55555555" }
    reference: "Birthday"
    executeOn: "YYYY-MM-DD"
  }) {
    payment { id status executeOn }
    errors { code message field }
  }
}

# 2c. Changed your mind? Cancel it (paste its id). A SCHEDULED payment is simply cancelled; a
#     PENDING one is stopped at the provider first, or, if the provider already took it, you get
#     PAYMENT_NOT_CANCELLABLE and it stays COMPLETED.
mutation Cancel {
  cancelPayment(paymentId: "PASTE-PAYMENT-ID") {
    payment { id status failureReason }
    errors { code message }
  }
}

# 2d. Pay every month: a standing order makes one payment on each due day (keyed so:<id>:<date>;
#     a 31st falls on the last day of shorter months). Put a future date in firstPaymentOn.
mutation StandingOrder {
  createStandingOrder(input: {
    idempotencyKey: "walkthrough-rent"
    fromAccountId: "PASTE-ACCOUNT-ID"
    amount: 50000
    recipient: { name: "Landlord Ltd", sortCode: "20-00-00", accountNumber: "66666666" }
    reference: "Rent"
    frequency: MONTHLY
    firstPaymentOn: "YYYY-MM-DD"
  }) {
    standingOrder { id frequency nextPaymentOn active }
    errors { code message field }
  }
}

# 3. Watch a payment: paste the payment id from step 2. You get its state now, every change,
#    and the subscription ends at COMPLETED, CANCELLED, FAILED or RETURNED.
subscription Watch {
  paymentUpdated(paymentId: "PASTE-PAYMENT-ID") { id status failureReason updatedAt }
}

# 4. Watch every payment of an account (run it, then send payments from step 2).
subscription WatchAccount {
  accountPaymentsUpdated(accountId: "PASTE-ACCOUNT-ID") { id amount status }
}

# 5. Webhooks: register an endpoint for an account (keep the secret: it is shown only once).
#    Every event of the account is POSTed there, signed (README: "Webhooks (for integrators)").
mutation Webhook {
  createWebhookEndpoint(input: { accountId: "PASTE-ACCOUNT-ID", url: "http://127.0.0.1:8080/hooks" }) {
    endpoint { id url }
    secret
    errors { code message field }
  }
}

query Deliveries {
  account(id: "PASTE-ACCOUNT-ID") {
    webhookEndpoints { id url deliveries(first: 10) { edges { node { eventId status attempts lastResponseStatus lastAttemptAt } } } }
  }
}

# 6. The payment, its attempts, and the account's ledger.
query Payment {
  payment(id: "PASTE-PAYMENT-ID") {
    status failureReason
    attempts { number at outcome detail }
    account { balance ledger(first: 5) { edges { node { kind amount balanceAfter counterparty { name } reference createdAt } } } }
  }
}

# 7. The account's event stream: every status change of every payment, in commit order, kept for
#    30 days. Page through it; each event's id is a cursor.
query Events {
  paymentEvents(accountId: "PASTE-ACCOUNT-ID", first: 10) {
    edges { node { id paymentId previousStatus status amount occurredAt } }
    pageInfo { hasNextPage endCursor }
  }
}

# 8. Follow it live. Give the last id you saw as after (or leave it out for "from now"): you get
#    every event since, exactly once and in order, then new ones as they happen, from any server.
subscription FollowEvents {
  accountEvents(accountId: "PASTE-ACCOUNT-ID", after: null) { id paymentId previousStatus status amount }
}

# 9. Confirmation of Payee: is this the name on that account? A near miss is CLOSE_MATCH, with the
#    name the recipient's bank holds. Over £1,000 (100000 pence) to someone who is not a saved
#    payee, sendPayment needs a check's id as payeeCheckId (valid 24 hours); a NO_MATCH one is refused.
mutation Check {
  checkPayee(input: { name: "Grace Hoper", sortCode: "12-34-56", accountNumber: "12345678" }) {
    id result matchedName checkedAt
  }
}

# 10. Save the recipient as a payee (it is checked again), then pay it: the first payment to a payee
#    saved less than 24 hours ago is HELD for the bank's review (so is any payment of £10,000 or
#    more). It is debited now, and sent only once an operator approves it. Watch it with step 3.
mutation SavePayee {
  addPayee(input: { name: "Grace Hopper", sortCode: "12-34-56", accountNumber: "12345678" }) {
    id name lastCheck { result }
  }
}
mutation PayNewPayee {
  sendPayment(input: {
    idempotencyKey: "walkthrough-held-1"
    fromAccountId: "PASTE-ACCOUNT-ID"
    amount: 5000
    recipient: { name: "Grace Hopper", sortCode: "12-34-56", accountNumber: "12345678" }
  }) {
    payment { id status amount }
    errors { code message field }
  }
}

# 11. As the operator (put the operator token that npm start printed in the Headers tab): the held
#     payments, and approving one (HELD -> PENDING with its settlement job; it then COMPLETES), or
#     rejecting it with a reason (CANCELLED, money back). Both are in the operator action log.
query Held {
  heldPayments { edges { node { id amount status recipient { name } createdAt } } }
}
mutation Approve {
  approvePayment(paymentId: "PASTE-PAYMENT-ID") { id status }
}
query ActionLog {
  operatorActions(first: 5) { edges { node { operator action targetId detail at } } }
}

# 12. Back as the customer: the balances and a statement. availableBalance is what can be spent
#     (the balance); ledgerBalance still counts payments debited but not yet gone (pendingOutgoing).
#     A statement covers London days, both inclusive (put today's date in both): opening balance +
#     money in - money out = closing balance, each entry with the balance after it. The same
#     statement as CSV: GET /accounts/PASTE-ACCOUNT-ID/statement.csv?from=...&to=... with this token.
query Statement {
  account(id: "PASTE-ACCOUNT-ID") {
    balance availableBalance ledgerBalance pendingOutgoing
    balanceAt(at: "2026-12-01T12:00:00.000Z") { at availableBalance ledgerBalance }
    statement(from: "2026-12-01", to: "2026-12-01", first: 20) {
      from to openingBalance moneyIn moneyOut closingBalance
      entries { edges { node { at kind amount runningBalance counterparty { name } reference } } pageInfo { hasNextPage endCursor } }
    }
  }
}

# 13. As the operator: reconcile a day with the provider's settlement report (a daily job does it
#     for yesterday). Each difference is a break until an operator resolves it (logged).
mutation Reconcile {
  reconcile(date: "2026-12-01") { id kind providerReference ours theirs }
}
`;

// The page's options are JSON; this marker is swapped for a reference to our fetcher function.
const FETCHER_MARKER = '__payments_fetcher__';

/** What the IDE is opened with: a token for its Headers tab and the account the walk-through uses. */
export interface IdeDemo {
  token: string;
  accountId: string;
}

export function renderIde(demo?: IdeDemo): string {
  const html = renderGraphiQL({
    title: 'Payments API',
    endpoint: '/graphql',
    subscriptionsProtocol: 'WS',
    defaultQuery: demo ? WALKTHROUGH.replaceAll('PASTE-ACCOUNT-ID', demo.accountId) : WALKTHROUGH,
    // No token: no Authorization header at all, so introspection (the Docs panel) works until one
    // is pasted; an empty "Bearer " would be refused as a malformed token.
    headers: JSON.stringify(demo ? { Authorization: `Bearer ${demo.token}` } : {}, null, 2),
    shouldPersistHeaders: true,
    // Not a GraphiQLOptions field in the types, but the page hands it to GraphiQL as its fetcher.
    ...({ fetcher: FETCHER_MARKER } as object),
  });
  const scripts = IDE_SCRIPTS.map((src) => `<script src="${src}"></script>`).join('\n');
  return html.replace('<head>', `<head>\n${scripts}`).replace(JSON.stringify(FETCHER_MARKER), 'window.paymentsFetcher');
}
