import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { audit } from '../src/audit.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { createProviderEvents } from '../src/payments/provider-events.ts';
import { createProviderClient } from '../src/provider/client.ts';
import { emulatorCall, expectNoErrorLogs, gql, type Stack, startStack } from './helpers.ts';

/**
 * A provider event the parser refuses is quarantined (kept whole for operators, counted, flagged by
 * the audit until an operator resolves it, which is logged), and never holds up the events behind it.
 */

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ worker: false });
});
afterAll(async () => {
  await stack?.stop();
});

const QUARANTINED = /* GraphQL */ `
  query($unresolved: Boolean) {
    quarantinedProviderEvents(unresolvedOnly: $unresolved) {
      edges { node { id eventId type problem raw receivedAt resolvedAt resolvedBy resolutionNote } }
    }
  }
`;
interface QuarantinedNode {
  id: string;
  eventId: string;
  type: string | null;
  problem: string;
  raw: string;
  resolvedAt: string | null;
  resolvedBy: string | null;
}
type QuarantinedData = { quarantinedProviderEvents: { edges: Array<{ node: QuarantinedNode }> } };

describe('provider events the parser refuses', () => {
  it('are quarantined, counted and shown to operators, and the credit behind them is still credited', async () => {
    const alice = await stack.newCustomer(0);
    const account = await stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } });
    const sender = { name: 'Acme Ltd', sortCode: '401234', accountNumber: '87654321' };
    // A bad credit (its amount is not whole pence), an event with no id, a type we do not handle.
    await emulatorCall(stack, 'POST', '/admin/events', {
      event: {
        id: 'cr_bad_amount',
        type: 'credit.received',
        amount: '50.00',
        currency: 'GBP',
        recipient: { sortCode: account.sortCode, accountNumber: account.accountNumber },
        sender,
        reference: 'Invoice 1',
      },
    });
    await emulatorCall(stack, 'POST', '/admin/events', { event: { type: 'credit.received', amount: 100 } });
    await emulatorCall(stack, 'POST', '/admin/events', { event: { id: 'mandate_1', type: 'mandate.cancelled' } });
    const good = await emulatorCall(stack, 'POST', '/admin/credits', {
      amount: 5_000,
      recipient: { sortCode: account.sortCode, accountNumber: account.accountNumber },
      sender,
      reference: 'Invoice 2',
    });
    expect(good.status).toBe(201);

    const metrics = createMetrics();
    const events = createProviderEvents({
      prisma: stack.db,
      jobs: {
        returnCredit: () => Promise.reject(new Error('no credit here is for an unknown account')),
      },
      provider: createProviderClient({ baseUrl: stack.emulator.url, apiKey: stack.config.providerApiKey, timeoutMs: 2_000, metrics }),
      logger: stack.logger,
      metrics,
      pageSize: 2,
    });
    expect(await events.poll()).toBe(4);
    // Read again from the start (a poller that died before moving the cursor): nothing twice.
    await stack.db.providerEventCursor.update({ where: { id: true }, data: { cursor: null } });
    expect(await events.poll()).toBe(4);

    expect((await stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } })).balance).toBe(5_000n);
    const quarantined = await stack.db.providerEventQuarantine.findMany({ orderBy: { eventKey: 'asc' } });
    expect(quarantined.map((q) => [q.eventKey.startsWith('sha256:') ? 'sha256' : q.eventKey, q.rawType])).toEqual([
      ['cr_bad_amount', 'credit.received'],
      ['mandate_1', 'mandate.cancelled'],
      ['sha256', 'credit.received'],
    ]);
    const counted = (await metrics.registry.getSingleMetric('payments_provider_events_quarantined_total')?.get())?.values ?? [];
    expect(counted.reduce((sum, v) => sum + v.value, 0)).toBe(3);
    // One error line per quarantined event, for the on-call.
    expect(stack.errorLogs.filter((l) => l.includes('provider event quarantined'))).toHaveLength(3);
    stack.errorLogs.splice(0);

    const listed = await gql<QuarantinedData>(stack.apiUrl, stack.operatorToken, QUARANTINED);
    expect(listed.errors).toBeUndefined();
    const nodes = listed.data?.quarantinedProviderEvents.edges.map((e) => e.node) ?? [];
    expect(nodes).toHaveLength(3);
    const bad = nodes.find((n) => n.eventId === 'cr_bad_amount');
    expect(bad).toMatchObject({ type: 'credit.received', problem: expect.stringMatching(/amount/), resolvedAt: null });
    expect(JSON.parse(bad?.raw ?? '{}')).toMatchObject({ amount: '50.00', reference: 'Invoice 1' });
    const customer = await gql(stack.apiUrl, alice.token, QUARANTINED);
    expect(customer.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expectNoErrorLogs(stack);
  });

  it('is flagged by the audit until an operator resolves it, and the resolution is logged as an operator action', async () => {
    const flagged = async () =>
      (await audit({ prisma: stack.db })).checks.find((c) => c.name.startsWith('every provider event the parser refused'))?.violations ??
      [];
    expect(await flagged()).toHaveLength(3);
    const listed = await gql<QuarantinedData>(stack.apiUrl, stack.operatorToken, QUARANTINED, { unresolved: true });
    const target = listed.data?.quarantinedProviderEvents.edges.find((e) => e.node.eventId === 'cr_bad_amount')?.node;
    if (!target) throw new Error('cr_bad_amount not listed');
    const RESOLVE =
      'mutation($id: ID!, $note: String!) { resolveQuarantinedProviderEvent(id: $id, note: $note) { id resolvedAt resolvedBy resolutionNote } }';
    const empty = await gql(stack.apiUrl, stack.operatorToken, RESOLVE, { id: target.id, note: ' ' });
    expect(empty.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
    const resolved = await gql<{ resolveQuarantinedProviderEvent: QuarantinedNode & { resolutionNote: string } }>(
      stack.apiUrl,
      stack.operatorToken,
      RESOLVE,
      { id: target.id, note: 'credited £50.00 by hand after asking the provider' },
    );
    expect(resolved.data?.resolveQuarantinedProviderEvent).toMatchObject({
      resolvedBy: 'test-operator@bank',
      resolutionNote: expect.any(String),
    });
    expect(await flagged()).toHaveLength(2);
    const log = await stack.db.operatorAction.findMany({ where: { action: 'resolveQuarantinedProviderEvent' } });
    expect(log).toEqual([expect.objectContaining({ targetId: target.id, operator: 'test-operator@bank' })]);
    // Resolving again changes nothing and logs nothing more.
    await gql(stack.apiUrl, stack.operatorToken, RESOLVE, { id: target.id, note: 'again' });
    expect(await stack.db.operatorAction.count({ where: { action: 'resolveQuarantinedProviderEvent' } })).toBe(1);
    const unresolved = await gql<QuarantinedData>(stack.apiUrl, stack.operatorToken, QUARANTINED, { unresolved: true });
    expect(unresolved.data?.quarantinedProviderEvents.edges).toHaveLength(2);
    expectNoErrorLogs(stack);
  });
});
