import { renderGraphiQL } from '@graphql-yoga/render-graphiql';

/**
 * The in-browser IDE: GraphiQL with its editor and workers inlined into one page, so it works
 * with no internet. Queries and mutations go over HTTP, subscriptions over graphql-ws.
 */

const WALKTHROUGH = `# Payments API: a walk-through. Put a token in the Headers tab below:
#   { "Authorization": "Bearer <token>" }   (npm start prints demo tokens)
# Then run the operations one by one with the ▶ button.

# 1. Who am I, and what do I hold?
query Me {
  me {
    name
    accounts { id name sortCode accountNumber balance }
  }
}

# 2. Send money. Copy an account id from step 1 into fromAccountId.
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

# 3. Watch it settle: paste the payment id from step 2.
subscription Watch {
  paymentUpdated(paymentId: "PASTE-PAYMENT-ID") { id status failureReason updatedAt }
}

# 4. The payment, its attempts, and the account's ledger.
query Payment {
  payment(id: "PASTE-PAYMENT-ID") {
    status failureReason
    attempts { number at outcome detail }
    account { balance ledger(first: 5) { edges { node { kind amount balanceAfter createdAt } } } }
  }
}
`;

export function renderIde(options: { defaultToken?: string } = {}): string {
  return renderGraphiQL({
    title: 'Payments API',
    endpoint: '/graphql',
    subscriptionsProtocol: 'WS',
    defaultQuery: WALKTHROUGH,
    headers: JSON.stringify(
      options.defaultToken ? { Authorization: `Bearer ${options.defaultToken}` } : { Authorization: 'Bearer ' },
      null,
      2,
    ),
    shouldPersistHeaders: true,
  });
}
