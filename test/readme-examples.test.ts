import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack, type TestCustomer } from './helpers.ts';

/**
 * The README's first requests, run exactly as written (taken from the README itself), so a
 * newcomer's copy and paste keeps working.
 */
const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;

async function example(name: string): Promise<string> {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const match = new RegExp(`<!-- readme-example: ${name.replace('.', '\\.')} -->\\n\`\`\`\\w+\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (!match?.[1]) throw new Error(`README has no example named ${name}`);
  return match[1];
}

let stack: Stack;
let alice: TestCustomer;
let env: Record<string, string>;
beforeAll(async () => {
  stack = await startStack();
  alice = await stack.newCustomer(10_000);
  env = { PATH: process.env.PATH ?? '', API: stack.apiUrl, TOKEN: alice.token, ACCOUNT: alice.accountId };
});
afterAll(async () => {
  await stack?.stop();
});

const sh = async (script: string) => JSON.parse((await run('bash', ['-c', script], { env })).stdout) as Record<string, unknown>;

describe("the README's first requests", () => {
  it('queries who the token belongs to with curl', async () => {
    expect(await sh(await example('query'))).toEqual({
      data: { me: { name: 'Test Customer', accounts: [{ id: alice.accountId, balance: 10_000 }] } },
    });
  });

  it('sends a payment with curl, and the same request again is the same payment', async () => {
    const send = await example('send');
    const first = (await sh(send)) as {
      data: { sendPayment: { payment: { id: string; status: string }; errors: unknown[]; replayed: boolean } };
    };
    expect(first.data.sendPayment).toMatchObject({ payment: { status: 'PENDING' }, errors: [], replayed: false });
    const again = (await sh(send)) as typeof first;
    // The same payment (by now perhaps settled), nothing new debited.
    expect(again.data.sendPayment).toMatchObject({ payment: { id: first.data.sendPayment.payment.id }, errors: [], replayed: true });
  });

  it('watches a payment settle with the graphql-ws client', async () => {
    const sent = await stack.send(alice.token, {
      idempotencyKey: 'readme-watch',
      fromAccountId: alice.accountId,
      amount: 300,
      recipient: { name: 'Ada', sortCode: '112233', accountNumber: '12345678' },
    });
    const dir = new URL('../test-results/', import.meta.url);
    await mkdir(dir, { recursive: true });
    const file = new URL('watch.mjs', dir).pathname;
    await writeFile(file, await example('watch.mjs'));
    const { stdout } = await run(process.execPath, [file, sent.payment?.id ?? ''], { env, cwd: ROOT, timeout: 30_000 });
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; status: string });
    expect(lines.at(-1)).toEqual({ id: sent.payment?.id, status: 'COMPLETED', failureReason: null });
    expect(lines.every((l) => l.id === sent.payment?.id)).toBe(true);
  });
});
