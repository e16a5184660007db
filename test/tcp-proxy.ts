import type { AddressInfo } from 'node:net';
import net from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 that can stall: while stalled, bytes in both directions are dropped
 * and no socket is closed, as when a network path loses every packet. A connection opened during
 * a stall never reaches the server. Tests put it between a component and PostgreSQL to see how
 * that component notices a connection that hangs without closing.
 */
/** `url` with its host and port replaced by the proxy's, everything else kept. */
function throughPort(url: string, port: number): string {
  const u = new URL(url);
  u.hostname = '127.0.0.1';
  u.port = String(port);
  return u.toString();
}

export interface StallingProxy {
  /** `url` with its host and port replaced by the proxy's. */
  via(url: string): string;
  stall(): void;
  resume(): void;
  /**
   * The database is gone: every open connection is reset and new ones are refused (ECONNREFUSED)
   * until `restore()`, as when the server is stopped or its host is down.
   */
  cut(): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startStallingProxy(target: { host: string; port: number }): Promise<StallingProxy> {
  const sockets = new Set<net.Socket>();
  let stalled = false;
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };

  const server = net.createServer((client) => {
    track(client);
    if (stalled) return; // accepted, and silent forever
    const upstream = net.connect(target.port, target.host);
    track(upstream);
    client.on('data', (chunk) => {
      if (!stalled) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!stalled) client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let listening = true;

  return {
    via: (url) => throughPort(url, port),
    stall() {
      stalled = true;
    },
    resume() {
      stalled = false;
    },
    cut: () =>
      new Promise<void>((resolve) => {
        listening = false;
        server.close(() => resolve());
        for (const s of sockets) s.resetAndDestroy();
      }),
    restore: () =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          listening = true;
          server.off('error', reject);
          resolve();
        });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        if (listening) server.close(() => resolve());
        else resolve();
      }),
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of PostgreSQL that, once armed, lets the next `COMMIT` through
 * to the server and then cuts the connection before the server's answer can come back: the
 * client cannot know whether its transaction committed (an ambiguous commit). It reads the
 * client's frontend messages (Parse names a statement's text; Bind runs one) to recognise the
 * COMMIT, whether sent by text or as a named prepared statement.
 */
export interface CommitCuttingProxy {
  via(url: string): string;
  /** Cut the connection right after the next COMMIT reaches the server. */
  armCommitCut(): void;
  /** How many COMMITs were cut so far. */
  cuts(): number;
  close(): Promise<void>;
}

export async function startCommitCuttingProxy(target: { host: string; port: number }): Promise<CommitCuttingProxy> {
  const sockets = new Set<net.Socket>();
  let armed = false;
  let cut = 0;
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const cstring = (buf: Buffer, at: number): [string, number] => {
    const end = buf.indexOf(0, at);
    return [buf.toString('utf8', at, end), end + 1];
  };
  const isCommit = (sql: string | undefined) => sql !== undefined && /^\s*commit\s*;?\s*$/i.test(sql);

  const server = net.createServer((client) => {
    track(client);
    const upstream = net.connect(target.port, target.host);
    track(upstream);
    const statements = new Map<string, string>();
    let pending = Buffer.alloc(0);
    let started = false;
    let cutHere = false;
    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      let commitSent = false;
      // Whole messages only: the startup packet first (no type byte), then typed messages.
      for (;;) {
        if (!started) {
          if (pending.length < 4) break;
          const length = pending.readInt32BE(0);
          if (pending.length < length) break;
          const code = pending.readInt32BE(4);
          // An SSLRequest (80877103) is answered 'N' by the server and followed by the real startup.
          if (code !== 80877103) started = true;
          pending = pending.subarray(length);
          continue;
        }
        if (pending.length < 5) break;
        const length = pending.readInt32BE(1);
        if (pending.length < length + 1) break;
        const type = String.fromCharCode(pending[0] ?? 0);
        const body = pending.subarray(5, length + 1);
        if (type === 'P') {
          const [name, next] = cstring(body, 0);
          statements.set(name, cstring(body, next)[0]);
        } else if (type === 'B') {
          const [, next] = cstring(body, 0);
          if (isCommit(statements.get(cstring(body, next)[0]))) commitSent = true;
        } else if (type === 'Q') {
          if (isCommit(cstring(body, 0)[0])) commitSent = true;
        }
        pending = pending.subarray(length + 1);
      }
      if (armed && commitSent) {
        armed = false;
        cut++;
        cutHere = true;
        // The COMMIT goes to the server in full (end flushes, then FIN); the client never hears back.
        upstream.end(chunk);
        client.destroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!cutHere) client.write(chunk);
    });
    // After a cut the server side closes by itself once it has read the COMMIT.
    client.on('close', () => {
      if (!cutHere) upstream.destroy();
    });
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    via: (url) => throughPort(url, port),
    armCommitCut() {
      armed = true;
    },
    cuts: () => cut,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
