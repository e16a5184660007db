import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { parse, validate } from 'graphql';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiProcess, startApiProcess } from '../src/app/api.ts';
import { renderIde } from '../src/graphql/ide/page.ts';
import { buildSchema } from '../src/graphql/server.ts';
import { gql, paymentInput, type Stack, startStack, type TestCustomer } from './helpers.ts';

/**
 * The IDE in a real browser (Debian's chromium, driven by playwright-core) with every request
 * that is not to this machine blocked: it must work with no internet.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const hasBrowser = existsSync(CHROMIUM);
if (!hasBrowser) {
  console.warn(`\n*** SKIPPED: the IDE browser test needs Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH). ***\n`);
}

const ARTIFACTS = new URL('../test-results/', import.meta.url);

let stack: Stack;
let alice: TestCustomer;
let ide: ApiProcess;
let browser: Browser;

beforeAll(async () => {
  if (!hasBrowser) return;
  // No worker until the subscription shows PENDING: the test decides when the payment settles.
  stack = await startStack({ worker: false });
  alice = await stack.newCustomer(50_000);
  // A second API process on the same database whose IDE opens with Alice's token, as `npm start` does.
  ide = await startApiProcess({
    config: stack.config,
    databaseUrl: stack.databaseUrl,
    logger: stack.logger,
    port: 0,
    ideDemo: { token: alice.token, accountId: alice.accountId },
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await ide?.stop();
  await stack?.stop();
});

describe('the IDE in a browser', () => {
  it.skipIf(!hasBrowser)('runs a query and a subscription to COMPLETED with every non-local request blocked', async () => {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const blocked: string[] = [];
    await context.route('**/*', (route) => {
      const url = new URL(route.request().url());
      const local = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) || ['data:', 'blob:'].includes(url.protocol);
      if (local) return route.continue();
      blocked.push(url.toString());
      return route.abort('internetdisconnected');
    });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    const base = ide.api.url.replace('localhost', '127.0.0.1');
    // The response pane is a Monaco editor: it renders spaces as non-breaking ones.
    const responseText = async () => ((await page.locator('.graphiql-response').textContent()) ?? '').replace(/\s+/g, ' ');
    const run = async (query: string) => {
      await page.goto(`${base}?query=${encodeURIComponent(query)}`);
      await page.locator('.graphiql-execute-button').click();
    };

    // A first visit opens on the walk-through, with the token already in the Headers tab.
    await page.goto(base);
    await expect
      .poll(async () => ((await page.locator('.graphiql-query-editor').textContent()) ?? '').replace(/\s+/g, ' '), { timeout: 20_000 })
      .toContain('Payments API: a walk-through');

    await run('query Me { me { name accounts { id balance } } }');
    await expect.poll(responseText, { timeout: 20_000 }).toContain('"balance": 50000');

    // The payment stays PENDING until the worker starts, so the subscription watches it move.
    const sent = await stack.send(alice.token, paymentInput(alice.accountId, { amount: 1_250 }));
    await run(`subscription Watch { paymentUpdated(paymentId: "${sent.payment?.id}") { id status amount } }`);
    await expect.poll(responseText, { timeout: 20_000 }).toContain('PENDING');
    await stack.startWorker();
    await expect.poll(responseText, { timeout: 20_000 }).toContain('COMPLETED');
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL('ide-subscription-completed.png', ARTIFACTS).pathname, fullPage: true });
    if (blocked.length) console.info(`IDE test: blocked ${blocked.length} non-local request(s): ${blocked.join(', ')}`);
    expect(pageErrors).toEqual([]);
    await context.close();
  });
});

describe('the IDE page', () => {
  it("opens the walk-through on the demo customer's account, and without a token sends no Authorization header", () => {
    // Booleans, not toContain: a failure would print the whole page.
    const demo = renderIde({ token: 'demo-token', accountId: '00000000-0000-4000-8000-0000000acc01' });
    expect(demo.includes('00000000-0000-4000-8000-0000000acc01')).toBe(true);
    expect(demo.includes('PASTE-ACCOUNT-ID')).toBe(false);
    expect(demo.includes(String.raw`"headers":"{\n  \"Authorization\": \"Bearer demo-token\"\n}"`)).toBe(true);
    const anonymous = renderIde();
    expect(anonymous.includes('PASTE-ACCOUNT-ID')).toBe(true);
    expect(anonymous.includes('"headers":"{}"')).toBe(true);
  });

  it('opens on a walk-through whose every operation is valid against the schema', () => {
    const html = renderIde({ token: 't', accountId: '00000000-0000-4000-8000-0000000acc01' });
    const quoted = /"defaultQuery":"((?:[^"\\]|\\.)*)"/.exec(html)?.[1];
    expect(quoted).toBeDefined();
    const walkthrough = JSON.parse(`"${quoted ?? ''}"`) as string;
    expect(walkthrough.includes('createStandingOrder')).toBe(true);
    expect(validate(buildSchema(), parse(walkthrough)).map((e) => e.message)).toEqual([]);
  });

  it('answers the Docs panel’s introspection without a token in development', async () => {
    const own = await startStack({ worker: false });
    try {
      const response = await gql<{ __schema: { queryType: { name: string } } }>(
        own.apiUrl,
        null,
        '{ __schema { queryType { name } types { name } } }',
      );
      expect(response.errors).toBeUndefined();
      expect(response.data?.__schema.queryType.name).toBe('Query');
    } finally {
      await own.stop();
    }
  });
});
