// The petchat server for the browser tests: a free port, the binary from
// PETCHAT_SERVER (scripts/browser.sh builds it) on an SQLite file that
// survives restarts, and a wait until it listens.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

export const root = new URL('../../', import.meta.url).pathname;

/** A TCP port nobody listens on right now. */
export async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)); });
  });
}

async function listening(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
    socket.on('error', () => resolve(false));
  });
}

/** One server on one port and one database, which can be stopped and started again. */
export class Server {
  constructor(port, flags = []) {
    this.port = port;
    this.flags = flags;
    this.database = join(mkdtempSync(join(tmpdir(), 'petchat-browser-')), 'petchat.db');
    this.child = null;
  }

  /** Starts the server and resolves once it accepts connections. */
  async start() {
    this.child = spawn(process.env.PETCHAT_SERVER, ['--dev', '--bind', `127.0.0.1:${this.port}`,
      '--database-url', `sqlite://${this.database}`, '--web-dir', join(root, 'target/web'),
      '--agent-grace-ms', '600000', ...this.flags],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } });
    for (let i = 0; i < 100; i++) {
      if (await listening(this.port)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the server did not listen');
  }

  /** SIGKILLs the server, as a crash would, and resolves once it is gone. */
  async kill() {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }
}
