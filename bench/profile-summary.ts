import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Summarises a V8 `.cpuprofile` (`node --cpu-prof`): where the samples fell, by package (the
 * `node_modules` folder, `node:` internals, the service's own `src/`, V8's GC, idle) and by
 * function, self time and total (inclusive) time. Samples can be limited to a window from the
 * profile's start (`fromSeconds`, `toSeconds`), so a run's start-up and its load can be told apart.
 *
 * `node bench/profile-summary.ts <file.cpuprofile> [--from S] [--to S] [--top N]`
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Row {
  name: string;
  ms: number;
  share: number;
}

export interface ProfileSummary {
  /** Wall time the window covers, and how much of it the thread was not idle. */
  windowMs: number;
  busyMs: number;
  /** Shares are of busy time (idle excluded). */
  byPackage: Row[];
  selfByFunction: Row[];
  totalByFunction: Row[];
}

/** Which package a frame belongs to: `jose`, `@prisma/client`, `node:internal`, `src`, `(garbage collector)`. */
export function packageOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  if (url.startsWith('node:')) return 'node (core)';
  const path = url.replace(/^file:\/\//, '');
  const parts = path.split('/node_modules/');
  if (parts.length > 1) {
    const rest = (parts[parts.length - 1] ?? '').split('/');
    return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? '?');
  }
  const src = /\/(src|bench|tools)\/(.*)$/.exec(path);
  if (src) return src[1] === 'src' && src[2]?.startsWith('generated/') ? 'src/generated (prisma client)' : `${src[1]} (ours)`;
  return path;
}

const label = (f: CallFrame) => {
  const file = f.url ? f.url.replace(/^.*\/node_modules\//, '').replace(/^file:\/\/.*\/(src|bench|tools)\//, '$1/') : '';
  return `${f.functionName || '(anonymous)'} ${file ? `${file}:${f.lineNumber + 1}` : ''}`.trim();
};

export function summarize(profile: CpuProfile, options: { fromSeconds?: number; toSeconds?: number; top?: number } = {}): ProfileSummary {
  const top = options.top ?? 25;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const from = (options.fromSeconds ?? 0) * 1e6;
  const to = (options.toSeconds ?? Number.POSITIVE_INFINITY) * 1e6;

  const self = new Map<number, number>();
  let t = 0;
  let windowUs = 0;
  // Sample i lasted timeDeltas[i + 1] (the time until the next sample was taken).
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    if (t < from || t >= to) continue;
    const id = profile.samples[i] ?? 0;
    self.set(id, (self.get(id) ?? 0) + dt);
    windowUs += dt;
  }
  const idleUs = [...self].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((s, [, us]) => s + us, 0);
  const busyUs = windowUs - idleUs;

  const packages = new Map<string, number>();
  const selfFn = new Map<string, number>();
  const totalFn = new Map<string, number>();
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node || node.callFrame.functionName === '(idle)') continue;
    const pkg = packageOf(node.callFrame);
    packages.set(pkg, (packages.get(pkg) ?? 0) + us);
    const name = `${label(node.callFrame)} [${pkg}]`;
    selfFn.set(name, (selfFn.get(name) ?? 0) + us);
    // Total time: every distinct function on the stack of this sample, once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur)?.callFrame;
      if (!frame || frame.functionName === '(root)') continue;
      const key = `${label(frame)} [${packageOf(frame)}]`;
      if (seen.has(key)) continue;
      seen.add(key);
      totalFn.set(key, (totalFn.get(key) ?? 0) + us);
    }
  }
  const rows = (m: Map<string, number>, n: number): Row[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, ms: us / 1000, share: busyUs > 0 ? us / busyUs : 0 }));
  return {
    windowMs: windowUs / 1000,
    busyMs: busyUs / 1000,
    byPackage: rows(packages, top),
    selfByFunction: rows(selfFn, top),
    totalByFunction: rows(totalFn, top),
  };
}

export function loadProfile(file: string): CpuProfile {
  return JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
}

export function summaryMarkdown(s: ProfileSummary, perItem?: { count: number; what: string }): string {
  const per = (ms: number) => (perItem ? ` | ${((ms * 1000) / perItem.count).toFixed(1)}` : '');
  const perHead = perItem ? ` | µs per ${perItem.what}` : '';
  const perRule = perItem ? '---|' : '';
  const table = (title: string, rows: Row[]) =>
    [
      `| ${title} | ms | share of busy${perHead} |`,
      `|---|---|---|${perRule}`,
      ...rows.map((r) => `| ${r.name.replaceAll('|', '\\|')} | ${r.ms.toFixed(0)} | ${(r.share * 100).toFixed(1)} %${per(r.ms)} |`),
    ].join('\n');
  return [
    `window ${(s.windowMs / 1000).toFixed(1)} s, busy ${(s.busyMs / 1000).toFixed(1)} s (${((100 * s.busyMs) / Math.max(1, s.windowMs)).toFixed(0)} %)` +
      (perItem ? `, ${perItem.count} ${perItem.what}s: ${((s.busyMs * 1000) / perItem.count).toFixed(0)} µs busy per ${perItem.what}` : ''),
    '',
    table('package (self time)', s.byPackage),
    '',
    table('function (self time)', s.selfByFunction),
    '',
    table('function (total time, callees included)', s.totalByFunction),
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--') && !/^\d/.test(a));
  const opt = (name: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  if (!file) {
    process.stderr.write('usage: node bench/profile-summary.ts <file.cpuprofile> [--from S] [--to S] [--top N] [--count N]\n');
    process.exit(2);
  }
  const fromSeconds = opt('from');
  const toSeconds = opt('to');
  const top = opt('top');
  const count = opt('count');
  const summary = summarize(loadProfile(file), {
    ...(fromSeconds !== undefined ? { fromSeconds } : {}),
    ...(toSeconds !== undefined ? { toSeconds } : {}),
    ...(top !== undefined ? { top } : {}),
  });
  process.stdout.write(`${summaryMarkdown(summary, count ? { count, what: 'payment' } : undefined)}\n`);
}
