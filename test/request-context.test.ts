import { describe, expect, it } from 'vitest';
import { requestContexts, type Services } from '../src/graphql/context.ts';
import type { Loaders } from '../src/graphql/loaders.ts';
import { createLogger, type Logger } from '../src/logger.ts';

describe("a request's context", () => {
  it("inherits the services, makes the request's logger once and only when something logs, and keeps it through Apollo's copy", () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', name: 'test', destination: { write: (line: string) => lines.push(line) } });
    // Only what this test reads of the services; the context never looks inside them.
    const services = { logger, metrics: { marker: true } } as unknown as Services;
    const contextOf = requestContexts(services);
    const made: string[] = [];
    const own = (requestId: string) => ({
      viewer: null,
      loaders: {} as Loaders,
      logger: (): Logger => {
        made.push(requestId);
        return logger.child({ requestId });
      },
    });

    const a = contextOf(own('a'));
    const b = contextOf(own('b'));
    expect(a.metrics).toBe(services.metrics);
    expect(Object.keys(a)).toEqual(['viewer', 'loaders']);
    expect(made).toEqual([]);

    // What Apollo does to a context before each operation: its own properties, copied onto an
    // object with the same prototype.
    const copy: typeof a = Object.assign(Object.create(Object.getPrototypeOf(a)), a);
    copy.logger.info('one');
    copy.logger.info('two');
    b.logger.info('three');
    expect(made).toEqual(['a', 'b']);
    expect(lines.map((line) => JSON.parse(line)).map(({ requestId, msg }) => ({ requestId, msg }))).toEqual([
      { requestId: 'a', msg: 'one' },
      { requestId: 'a', msg: 'two' },
      { requestId: 'b', msg: 'three' },
    ]);
  });
});
