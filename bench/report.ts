/** One row of bench/results/latest.json. */
export interface ScenarioResult {
  name: string;
  clients: number | null;
  /** Accepted payments per second through the API (settled per second for settlement scenarios). */
  acceptedPerSec: number;
  /** pgbench running the same SQL (for settlement: the API acceptance rate at 32 clients). */
  baselinePerSec: number | null;
  ratio: number | null;
  /** The minimal Node `pg` client running the same SQL. */
  nodeBaselinePerSec: number | null;
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  errors: number;
  errorSamples: string[];
  /** Peak RSS of the API process (the worker process for settlement). */
  rssMb: number | null;
  /** CPU time of the API process per accepted payment (user + system). */
  apiCpuMsPerPayment?: number | null;
  /** Database transaction time of the API's payments, from PostgreSQL commit timestamps. */
  txP50Ms: number | null;
  txP99Ms: number | null;
  /** The same for pgbench's transactions, for comparison. */
  baselineTxP99Ms: number | null;
  /** Lowest and highest API accepted/s over the repeated runs of this point (the median is `acceptedPerSec`). */
  acceptedSpread?: [number, number];
  /** Lowest and highest baseline/s over the repeated runs. */
  baselineSpread?: [number, number];
  runs?: number;
  notes?: string;
}

/** One steady-state point: API and worker together, an open loop at a fixed offered rate. */
export interface SteadyResult {
  name: string;
  providerLatencyMs: number;
  /** The offered rate as a share of the measured maximum acceptance rate. */
  loadShare: number;
  offeredPerSec: number;
  acceptedPerSec: number;
  /** Requests offered in the measured window, and how many were accepted. */
  offeredCount: number;
  acceptedCount: number;
  settledPerSec: number;
  /** Settlement jobs waiting (created or retry) when the load stopped. */
  queueDepthAtEnd: number;
  /** Seconds from the end of the load until the queue was empty again (null: not within the cap). */
  drainSeconds: number | null;
  /** Latency from when each request was due. */
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  errors: number;
  errorSamples: string[];
  /** CPU time the process spent per payment accepted (API) or settled (worker) in the window. */
  apiCpuMsPerPayment: number;
  workerCpuMsPerPayment: number;
  apiRssMb: number;
  workerRssMb: number;
}

/** pgbench at one client count: median and spread over the rounds. */
export interface PgbenchPoint {
  clients: number;
  tps: number;
  spread: [number, number];
  /** Why this count was run: the API's pool size, or the sweep for pgbench's best. */
  why: string;
}

const fmt = (v: number | null, digits = 1) => (v === null || Number.isNaN(v) ? '-' : v.toFixed(digits));

const range = (r: [number, number] | undefined) => (r ? `${fmt(r[0], 0)}-${fmt(r[1], 0)}` : '-');

/** Closed-loop points: medians over the rounds, with the spread (lowest-highest) of the rates. */
export function markdownTable(results: ScenarioResult[]): string {
  const head =
    '| scenario | clients | runs | API accepted/s | spread | pgbench/s (same clients) | spread | node pg/s | API / pgbench | p50 ms | p95 ms | p99 ms | tx p50 ms | tx p99 ms | pgbench tx p99 ms | errors | API CPU ms/payment | API RSS MB |';
  const rule = `|${'---|'.repeat(18)}`;
  const rows = results.map(
    (r) =>
      `| ${r.name} | ${r.clients ?? '-'} | ${r.runs ?? 1} | ${fmt(r.acceptedPerSec, 0)} | ${range(r.acceptedSpread)} | ${fmt(r.baselinePerSec, 0)} | ${range(r.baselineSpread)} | ${fmt(r.nodeBaselinePerSec, 0)} | ${fmt(r.ratio, 2)} | ${fmt(r.p50Ms)} | ${fmt(r.p95Ms)} | ${fmt(r.p99Ms)} | ${fmt(r.txP50Ms)} | ${fmt(r.txP99Ms)} | ${fmt(r.baselineTxP99Ms)} | ${r.errors} | ${fmt(r.apiCpuMsPerPayment ?? null, 2)} | ${fmt(r.rssMb, 0)} |`,
  );
  return [head, rule, ...rows].join('\n');
}

export function pgbenchTable(points: PgbenchPoint[]): string {
  const head = '| pgbench clients | tps (median) | spread | why |';
  const rows = points.map((p) => `| ${p.clients} | ${fmt(p.tps, 0)} | ${range(p.spread)} | ${p.why} |`);
  return [head, '|---|---|---|---|', ...rows].join('\n');
}

export function steadyTable(results: SteadyResult[]): string {
  const head =
    '| steady state | provider ms | load | offered/s | accepted/s | settled/s | settled / accepted | queue at end | drain s | p50 ms | p95 ms | p99 ms | errors | API CPU ms/payment | worker CPU ms/payment | API RSS MB | worker RSS MB |';
  const rows = results.map(
    (r) =>
      `| ${r.name} | ${r.providerLatencyMs} | ${fmt(r.loadShare * 100, 0)} % | ${fmt(r.offeredPerSec, 0)} | ${fmt(r.acceptedPerSec, 0)} | ${fmt(r.settledPerSec, 0)} | ${fmt(r.settledPerSec / r.acceptedPerSec, 2)} | ${r.queueDepthAtEnd} | ${fmt(r.drainSeconds)} | ${fmt(r.p50Ms)} | ${fmt(r.p95Ms)} | ${fmt(r.p99Ms)} | ${r.errors} | ${fmt(r.apiCpuMsPerPayment, 2)} | ${fmt(r.workerCpuMsPerPayment, 2)} | ${fmt(r.apiRssMb, 0)} | ${fmt(r.workerRssMb, 0)} |`,
  );
  return [head, `|${'---|'.repeat(17)}`, ...rows].join('\n');
}

/** A line chart of throughput against concurrency: API, pgbench and the Node baseline. */
export function throughputSvg(results: ScenarioResult[]): string {
  const points = results.filter((r) => r.name.startsWith('spread-') && r.clients !== null);
  const series: { label: string; color: string; values: (r: ScenarioResult) => number | null }[] = [
    { label: 'API (GraphQL over HTTP)', color: '#d62728', values: (r) => r.acceptedPerSec },
    { label: 'pgbench, same SQL', color: '#1f77b4', values: (r) => r.baselinePerSec },
    { label: 'Node pg, same SQL', color: '#2ca02c', values: (r) => r.nodeBaselinePerSec },
  ];
  const width = 640;
  const height = 400;
  const m = { left: 70, right: 20, top: 40, bottom: 60 };
  const all = points.flatMap((p) => series.map((s) => s.values(p) ?? 0));
  const maxY = Math.max(1, ...all) * 1.1;
  const xs = points.map((p) => p.clients ?? 1);
  const logX = (c: number) => Math.log2(c);
  const minX = logX(Math.min(...xs, 1));
  const maxX = logX(Math.max(...xs, 2));
  const px = (c: number) => m.left + ((logX(c) - minX) / (maxX - minX || 1)) * (width - m.left - m.right);
  const py = (v: number) => height - m.bottom - (v / maxY) * (height - m.top - m.bottom);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="14">sendPayment throughput against concurrency</text>`,
    `<line x1="${m.left}" y1="${height - m.bottom}" x2="${width - m.right}" y2="${height - m.bottom}" stroke="black"/>`,
    `<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${height - m.bottom}" stroke="black"/>`,
    `<text x="${width / 2}" y="${height - 20}" text-anchor="middle">concurrent clients</text>`,
    `<text transform="translate(18 ${height / 2}) rotate(-90)" text-anchor="middle">payments / s</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const v = (maxY / 5) * i;
    parts.push(
      `<line x1="${m.left - 4}" y1="${py(v)}" x2="${width - m.right}" y2="${py(v)}" stroke="#ddd"/>`,
      `<text x="${m.left - 8}" y="${py(v) + 4}" text-anchor="end">${Math.round(v)}</text>`,
    );
  }
  for (const c of xs) {
    parts.push(`<text x="${px(c)}" y="${height - m.bottom + 18}" text-anchor="middle">${c}</text>`);
  }
  series.forEach((s, i) => {
    const pts = points
      .map((p) => ({ c: p.clients ?? 1, v: s.values(p) }))
      .filter((p): p is { c: number; v: number } => p.v !== null && !Number.isNaN(p.v));
    if (pts.length > 0) {
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${px(p.c).toFixed(1)},${py(p.v).toFixed(1)}`).join(' ')}"/>`,
        ...pts.map((p) => `<circle cx="${px(p.c).toFixed(1)}" cy="${py(p.v).toFixed(1)}" r="3" fill="${s.color}"/>`),
      );
    }
    const ly = m.top + 4 + i * 16;
    parts.push(
      `<line x1="${m.left + 12}" y1="${ly}" x2="${m.left + 32}" y2="${ly}" stroke="${s.color}" stroke-width="2"/>`,
      `<text x="${m.left + 38}" y="${ly + 4}">${s.label}</text>`,
    );
  });
  parts.push('</svg>', '');
  return parts.join('\n');
}
