import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type ApiProcess, startApiProcess } from '../src/app/api.ts';
import { audit, formatAudit } from '../src/audit.ts';
import { captureLogger, emulatorCall, gql, paymentInput, type Stack, startStack } from './helpers.ts';
import { type CommitCuttingProxy, startCommitCuttingProxy } from './tcp-proxy.ts';

/**
 * An ambiguous commit: the API's connection dies after its COMMIT reached PostgreSQL and before the
 * answer came back (a failover, a network cut), so the API cannot know whether the payment was
 * taken. A proxy between the API and PostgreSQL forwards the COMMIT and then cuts the connection.
 * The client, told nothing definite, retries with the same idempotency key: it must get the payment
 * that did commit, debited once, and the provider must be asked for it once.
 */
const SEND = /* GraphQL */ `
  mutation Send($input: SendPaymentInput!) {
    sendPayment(input: $input) { payment { id status } errors { code } replayed }
  }
`;
interface Sent {
  sendPayment: { payment: { id: string; status: string } | null; errors: Array<{ code: string }>; replayed: boolean } | null;
}

let stack: Stack;
let proxy: CommitCuttingProxy;
let cutApi: ApiProcess;
const cutLog = captureLogger();

beforeAll(async () => {
  stack = await startStack();
  const u = new URL(stack.databaseUrl);
  proxy = await startCommitCuttingProxy({ host: u.hostname, port: Number(u.port) });
  cutApi = await startApiProcess({
    config: stack.config,
    databaseUrl: proxy.via(stack.databaseUrl),
    // The event feed's own connection is not the one under test.
    eventsDatabaseUrl: stack.databaseUrl,
    logger: cutLog.logger,
    port: 0,
    providerUrl: stack.emulator.url,
  });
});
afterAll(async () => {
  await cutApi?.stop();
  await proxy?.close();
  await stack?.stop();
});

describe('a COMMIT whose answer is lost', () => {
  it('is retried with the same key: the same payment, debited once, at the provider once', async () => {
    const alice = await stack.newCustomer(10_000);
    const input = paymentInput(alice.accountId, { amount: 2_500 });
    const url = cutApi.api.url.replace('localhost', '127.0.0.1');

    proxy.armCommitCut();
    const first = await gql<Sent>(url, alice.token, SEND, { input });
    expect(proxy.cuts()).toBe(1);
    // Nothing definite came back: no payment and no business answer, only the retryable answer.
    expect(first.data?.sendPayment ?? null).toBeNull();
    expect(first.errors?.map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);

    // It did commit: the retry (through the same API) finds it, and takes nothing more.
    const retry = await gql<Sent>(url, alice.token, SEND, { input });
    expect(retry.errors).toBeUndefined();
    const paymentId = retry.data?.sendPayment?.payment?.id ?? '';
    expect(retry.data?.sendPayment?.replayed).toBe(true);
    const again = await gql<Sent>(stack.apiUrl, alice.token, SEND, { input });
    expect(again.data?.sendPayment?.payment?.id).toBe(paymentId);

    const payments = await stack.db.payment.findMany({ where: { idempotencyKey: input.idempotencyKey }, include: { ledgerEntries: true } });
    expect(payments.map((p) => p.id)).toEqual([paymentId]);
    expect(payments[0]?.ledgerEntries.map((e) => [e.kind, e.amount])).toEqual([['PAYMENT_DEBIT', -2_500n]]);
    expect((await stack.db.account.findUniqueOrThrow({ where: { id: alice.accountId } })).balance).toBe(7_500n);

    // Settled once: the provider holds it once, and the worker created it there once.
    await vi.waitFor(
      async () => expect((await stack.db.payment.findUniqueOrThrow({ where: { id: paymentId } })).status).toBe('COMPLETED'),
      { timeout: 30_000, interval: 100 },
    );
    const held = (await emulatorCall(stack, 'GET', '/admin/payments')).json as Array<{ idempotencyKey: string }>;
    expect(held.filter((p) => p.idempotencyKey === paymentId)).toHaveLength(1);
    expect(stack.emulator.requests().byKey[paymentId]?.create).toBe(1);
    const report = await audit({ prisma: stack.db, provider: { url: stack.emulator.url, apiKey: stack.config.providerApiKey } });
    expect(report.ok, formatAudit(report)).toBe(true);
  });
});
