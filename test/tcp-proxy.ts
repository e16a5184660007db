import type { AddressInfo } from 'node:net';
import net from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 that can stall: while stalled, bytes in both directions are dropped
 * and no socket is closed, as when a network path loses every packet. A connection opened during
 * a stall never reaches the server. Tests put it between a component and PostgreSQL to see how
 * that component notices a connection that hangs without closing.
 */
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
    via(url) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
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
