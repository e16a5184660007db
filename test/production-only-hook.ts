import { readFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Loaded with `node --import` by test/image.test.ts: makes this process resolve modules as the
 * production image does, where `npm prune --omit=dev` has removed every package the lockfile marks
 * `dev` (needed only by development dependencies). Resolving into one of those throws, naming the
 * importer, instead of quietly loading what the image would not have.
 */
const lock = JSON.parse(readFileSync(new URL('../package-lock.json', import.meta.url), 'utf8')) as {
  packages: Record<string, { dev?: boolean }>;
};

const ROOT = new URL('..', import.meta.url).href;

/** The lockfile key of the package holding `file` (`node_modules/a/node_modules/@b/c`), if it is in node_modules. */
function lockKey(file: string): string | undefined {
  const parts = file.split(path.sep);
  let i = parts.indexOf('node_modules');
  if (i < 0) return undefined;
  const key: string[] = [];
  while (parts[i] === 'node_modules') {
    const name = parts[i + 1]?.startsWith('@') ? parts.slice(i + 1, i + 3) : parts.slice(i + 1, i + 2);
    key.push('node_modules', ...name);
    i += 1 + name.length;
  }
  return key.join('/');
}

registerHooks({
  resolve(specifier, context, nextResolve) {
    const resolved = nextResolve(specifier, context);
    if (!resolved.url.startsWith('file:')) return resolved;
    const key = lockKey(fileURLToPath(resolved.url));
    if (key === undefined) return resolved;
    const entry = lock.packages[key];
    if (entry === undefined || entry.dev === true) {
      throw new Error(
        `${context.parentURL?.slice(ROOT.length) ?? '(entry)'} imports '${specifier}', which resolves into ${key}: ${entry ? 'a development-only package, pruned from the image' : 'a package missing from package-lock.json'}`,
      );
    }
    return resolved;
  },
});
