import { readdir, readFile } from 'node:fs/promises';
import { CriticalityLevel, diff } from '@graphql-inspector/core';
import { mergeTypeDefs } from '@graphql-tools/merge';
import { buildASTSchema, buildSchema } from 'graphql';
import { runMain } from '../src/run-main.ts';

/**
 * `npm run schema:check`: schema.graphql against the contract's surface (docs/contract/*.graphql,
 * the SDL of shared docs/api-contract.md, one file per part built so far). Adding to the contract is
 * fine; removing, renaming or retyping anything in it is a breaking change and exits 1.
 */
const ROOT = new URL('../', import.meta.url);

runMain(async () => {
  const dir = new URL('docs/contract/', ROOT);
  const files = (await readdir(dir)).filter((f) => f.endsWith('.graphql')).sort();
  const contract = buildASTSchema(mergeTypeDefs(await Promise.all(files.map((f) => readFile(new URL(f, dir), 'utf8')))), {
    assumeValidSDL: true,
  });
  const ours = buildSchema(await readFile(new URL('schema.graphql', ROOT), 'utf8'));
  const changes = await diff(contract, ours);
  const breaking = changes.filter((c) => c.criticality.level === CriticalityLevel.Breaking);
  for (const c of breaking) process.stdout.write(`BREAKING: ${c.message}\n`);
  process.stdout.write(`${files.length} contract parts, ${changes.length} differences, ${breaking.length} breaking\n`);
  if (breaking.length > 0) process.exitCode = 1;
});
