import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** A readiness check's answer is due within this: inside the usual 3 s of a health check's timeout. */
export const READY_DEADLINE_MS = 2_500;

/**
 * `check` bounded by `ms`: false when it has not answered by then. A database that drops packets, or
 * a pooler queueing for a server that is down, would otherwise keep /readyz from answering at all,
 * where the contract wants 503.
 */
export function readyWithin(check: () => Promise<boolean>, ms = READY_DEADLINE_MS): () => Promise<boolean> {
  return () =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      check().then(
        (ok) => {
          clearTimeout(timer);
          resolve(ok);
        },
        () => {
          clearTimeout(timer);
          resolve(false);
        },
      );
    });
}

/**
 * Liveness, readiness and metrics on an ops port, for scrapers and orchestrators rather than the
 * internet: the worker's (WORKER_PORT) and the API's (METRICS_PORT). The API also serves
 * /healthz and /readyz, and outside production /metrics, on its public port.
 */
export async function startOpsServer(options: {
  port: number;
  registry: Registry;
  ready: () => Promise<boolean>;
}): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET') return send(405, 'text/plain', 'method not allowed');
    if (req.url === '/healthz') return send(200, 'application/json', '{"status":"ok"}');
    if (req.url === '/readyz') {
      void options
        .ready()
        .catch(() => false)
        .then((ok) => send(ok ? 200 : 503, 'application/json', JSON.stringify({ status: ok ? 'ready' : 'not ready' })));
      return;
    }
    if (req.url === '/metrics') {
      void options.registry.metrics().then(
        (text) => send(200, options.registry.contentType, text),
        () => send(500, 'text/plain', 'metrics unavailable'),
      );
      return;
    }
    send(404, 'text/plain', 'not found');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, '0.0.0.0', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://localhost:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
