import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/** Rules of the source layout that the compiler does not check. */
const SRC = fileURLToPath(new URL('../src/', import.meta.url));

/** Every TypeScript file under `dir` (relative to src/), generated code excluded. */
function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(SRC, dir), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts'))
    .map((file) => path.join(SRC, dir, file))
    .filter((file) => !file.includes(`${path.sep}generated${path.sep}`));
}

/** The module specifiers a file imports (static and dynamic) or re-exports. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)];
  return specifiers.map((m) => m[1] ?? m[2] ?? '');
}

describe('the source layout', () => {
  it('keeps the payment services free of the job queue: payments/ imports neither src/jobs nor pg-boss', () => {
    const jobs = path.join(SRC, 'jobs');
    const offending = sourceFiles('payments').flatMap((file) =>
      importsOf(file)
        .filter(
          (spec) => spec === 'pg-boss' || (spec.startsWith('.') && path.resolve(path.dirname(file), spec).startsWith(jobs + path.sep)),
        )
        .map((spec) => `${path.relative(SRC, file)} imports ${spec}`),
    );
    expect(sourceFiles('payments').length).toBeGreaterThan(5);
    expect(offending).toEqual([]);
  });

  it('declares every schedule once, as a named constant of the job registry', () => {
    const registry = path.join(SRC, 'jobs', 'queues.ts');
    const cron = /['"`](?:[\d*/,-]+\s+){4}[\d*/,-]+['"`]/;
    const offending = sourceFiles('.').filter((file) => file !== registry && cron.test(readFileSync(file, 'utf8')));
    expect(offending.map((file) => path.relative(SRC, file))).toEqual([]);
  });

  it('tells no history in product code: comments say the rule, not which issue or version brought it', () => {
    const narration = /\b(?:issue|ticket)\s+#?\d+|\b(?:contract\s+)?version\s+\d+\b|\bcontract\s+v\d+\b/i;
    const offending = sourceFiles('.').flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .flatMap((line, i) => (narration.test(line) ? [`${path.relative(SRC, file)}:${i + 1}: ${line.trim()}`] : [])),
    );
    expect(offending).toEqual([]);
  });

  it("names every file and folder of src/ and tools/ in the README's layout", () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const layout = /## Layout\n\n```\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const named = new Set(layout.split(/[\s(),;:]+/).map((word) => word.replace(/\/$/, '')));
    const missing = ['src', 'tools'].flatMap((top) =>
      readdirSync(new URL(`../${top}/`, import.meta.url)).flatMap((entry) => (named.has(entry) ? [] : [`${top}/${entry}`])),
    );
    expect(layout).not.toBe('');
    expect(missing).toEqual([]);
  });
});
