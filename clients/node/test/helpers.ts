// Where the tests find PostgreSQL: PGGCL_TEST_DSN (a database with pggcl installed, e.g. given
// by tests/conformance/test_node.py), else a throwaway server started through the Python
// package (pggcl.testing.TempPostgres) of the repository's venv.
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { createInterface } from "node:readline";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import pg from "pg";

export const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "..", "..", "..", "..");
export const python = process.env.PGGCL_PYTHON ?? resolve(repo, ".venv", "bin", "python");

let server: ChildProcess | null = null;
let dsnPromise: Promise<string> | null = null;

export function testDsn(): Promise<string> {
  if (process.env.PGGCL_TEST_DSN) return Promise.resolve(process.env.PGGCL_TEST_DSN);
  dsnPromise ??= new Promise<string>((ok, fail) => {
    const code = [
      "import sys", "from pggcl import schema", "from pggcl.testing import TempPostgres",
      "with TempPostgres() as pg:", "    schema.upgrade(pg.dsn)", "    print(pg.dsn, flush=True)",
      "    sys.stdin.read()",
    ].join("\n");
    server = spawn(python, ["-c", code], { stdio: ["pipe", "pipe", "inherit"] });
    server.on("error", fail);
    createInterface({ input: server.stdout! }).once("line", (line) => ok(line.trim()));
  });
  return dsnPromise;
}

export function stopServer(): void {
  server?.stdin?.end();
}

/** Lines of a child process, awaited one at a time. */
export class Lines {
  private lines: string[] = [];
  private waiting: ((l: string) => void) | null = null;
  constructor(public child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (l) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(l);
      } else this.lines.push(l);
    });
  }
  next(timeoutMs = 20000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((ok, fail) => {
      const t = setTimeout(() => fail(new Error("no line from child")), timeoutMs);
      this.waiting = (x) => {
        clearTimeout(t);
        ok(x);
      };
    });
  }
}

export function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((ok) => {
    if (child.exitCode !== null || child.signalCode !== null) ok(child.exitCode);
    else child.once("exit", (code) => ok(code));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `predicate` (a state the code under test brings about) until it holds, or fail. */
export async function until(predicate: () => Promise<boolean> | boolean, what: string, timeoutMs = 20000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await predicate())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

/** A PostgreSQL server of the test file's own (test/server.py): restartable, with PgBouncers. */
export class OwnServer {
  private lines: Lines;
  private constructor(private child: ChildProcess, readonly dsn: string, lines: Lines) {
    this.lines = lines;
  }

  static async start(): Promise<OwnServer> {
    const child = spawn(python, [resolve(repo, "clients", "node", "test", "server.py")], { stdio: ["pipe", "pipe", "inherit"] });
    const lines = new Lines(child);
    const first = JSON.parse(await lines.next(60000)) as { dsn: string };
    return new OwnServer(child, first.dsn, lines);
  }

  private async ask(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.child.stdin!.write(JSON.stringify(cmd) + "\n");
    return JSON.parse(await this.lines.next(60000)) as Record<string, unknown>;
  }

  /** `pg_ctl restart -m fast`; resolves once the server accepts connections again. */
  async restart(): Promise<void> {
    await this.ask({ cmd: "restart" });
  }

  /** A DSN through a new PgBouncer in `mode`, or null when pgbouncer is not installed. */
  async bouncer(mode: "session" | "transaction", settings: Record<string, string> = {}): Promise<string | null> {
    const r = await this.ask({ cmd: "bouncer", mode, settings });
    return typeof r.dsn === "string" ? r.dsn : null;
  }

  async stop(): Promise<void> {
    this.child.stdin!.end();
    await exited(this.child);
  }
}

/** A transaction of its own that holds limit `name`'s row lock: every acquire, take and
 * release of that limit waits for it until `commit()`. */
export async function lockLimit(dsn: string, name: string): Promise<{ commit: () => Promise<void> }> {
  const conn = new pg.Client({ connectionString: dsn });
  await conn.connect();
  await conn.query("BEGIN");
  await conn.query("SELECT 1 FROM pggcl.limit_state WHERE name = $1 FOR UPDATE", [name]);
  return {
    commit: async () => {
      await conn.query("COMMIT");
      await conn.end();
    },
  };
}

/** Run one statement on a connection of its own. */
export async function sql<R extends Record<string, unknown>>(dsn: string, text: string, args: unknown[] = []): Promise<R[]> {
  const conn = new pg.Client({ connectionString: dsn });
  await conn.connect();
  try {
    return (await conn.query<R>(text, args)).rows;
  } finally {
    await conn.end();
  }
}

/** The backends waiting for a lock while running a statement that contains `fragment`. */
export async function lockWaiters(dsn: string, fragment: string): Promise<number[]> {
  const rows = await sql<{ pid: number }>(dsn,
    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0", [fragment]);
  return rows.map((r) => r.pid);
}

/** A TCP proxy in front of the server that can lose one answer: `loseNextAnswer()` makes it
 * swallow the next bytes the server sends and cut that connection, as a network failure after
 * the server committed would. The client sees its connection dropped mid-call. */
export class LossyProxy {
  private server: net.Server;
  private losing = false;
  private down = false;
  private readonly live = new Set<net.Socket>();
  lost = 0;
  port = 0;

  constructor(private targetPort: number) {
    this.server = net.createServer((client) => {
      if (this.down) {
        client.destroy();
        return;
      }
      const upstream = net.connect(this.targetPort, "127.0.0.1");
      this.live.add(client).add(upstream);
      const cut = (): void => {
        this.live.delete(client);
        this.live.delete(upstream);
        client.destroy();
        upstream.destroy();
      };
      client.on("data", (d) => upstream.write(d));
      upstream.on("data", (d) => {
        if (this.losing) {
          this.losing = false;
          this.lost += 1;
          cut();
          return;
        }
        client.write(d);
      });
      client.on("error", cut).on("close", cut);
      upstream.on("error", cut).on("close", cut);
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((ok) => this.server.listen(0, "127.0.0.1", ok));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** `dsn` rewritten to go through this proxy. */
  through(dsn: string): string {
    const url = new URL(dsn);
    url.port = String(this.port);
    return url.toString();
  }

  loseNextAnswer(): void {
    this.losing = true;
  }

  /** Cut every connection and refuse new ones (the database "unreachable") until `up()`. */
  goDown(): void {
    this.down = true;
    for (const socket of this.live) socket.destroy();
  }

  up(): void {
    this.down = false;
  }

  /** Stop listening and cut every connection still open. */
  async stop(): Promise<void> {
    const closed = new Promise<void>((ok) => this.server.close(() => ok()));
    for (const socket of this.live) socket.destroy();
    await closed;
  }
}
