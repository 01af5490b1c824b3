// The client's pool for its calls: node-postgres's pg.Pool behind a gate of `size` turns, so
// that a call waits at most `poolTimeout` seconds for a free connection and then fails with
// PoolTimeoutError (as the Python clients' pool does), instead of queueing without bound inside
// pg.Pool. Connecting is bounded separately (`connectTimeout`): a server that does not answer
// is DatabaseUnavailableError, which the client retries; a busy pool says nothing about the
// server and is not retried.
import pg from "pg";

import { PoolTimeoutError, isUnavailable, translateError } from "./errors.js";

export class Pool {
  private readonly pool: pg.Pool;
  private free: number;
  private readonly turns: Array<() => void> = [];
  private readonly guarded = new WeakSet<pg.PoolClient>();

  constructor(
    dsn: string, private readonly size: number, private readonly poolTimeout: number, connectTimeout: number,
    applicationName?: string,
  ) {
    this.free = size;
    this.pool = new pg.Pool({ connectionString: dsn, max: size, connectionTimeoutMillis: Math.ceil(connectTimeout * 1000),
      ...(applicationName === undefined ? {} : { application_name: applicationName }),
    });
    this.pool.on("error", () => {});  // an idle connection the server closed: pg.Pool drops it
  }

  /** Callers waiting for a connection now (for tests and diagnostics). */
  get waiting(): number {
    return this.turns.length;
  }

  /** Run one statement on a pooled connection; errors come translated (pggcl classes). */
  async query<R extends Record<string, unknown>>(sql: string, args: unknown[]): Promise<R[]> {
    await this.turn();
    try {
      let conn: pg.PoolClient;
      try {
        conn = await this.pool.connect();
      } catch (err) {
        throw translateError(err);
      }
      if (!this.guarded.has(conn)) {
        // A connection that breaks while checked out also emits "error" (after failing its
        // query, which is where we see it): without a listener that would crash the process.
        conn.on("error", () => {});
        this.guarded.add(conn);
      }
      try {
        const rows = (await conn.query<R>(sql, args)).rows;
        conn.release();
        return rows;
      } catch (err) {
        conn.release(isUnavailable(err) ? (err as Error) : undefined);  // a broken one is dropped
        throw translateError(err);
      }
    } finally {
      this.giveBack();
    }
  }

  private turn(): Promise<void> {
    if (this.free > 0) {
      this.free -= 1;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const mine = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        const at = this.turns.indexOf(mine);
        if (at >= 0) this.turns.splice(at, 1);
        reject(new PoolTimeoutError(
          `all ${this.size} pool connection(s) stayed busy for ${this.poolTimeout} s; raise poolSize or poolTimeout`));
      }, this.poolTimeout * 1000);
      this.turns.push(mine);
    });
  }

  private giveBack(): void {
    const next = this.turns.shift();
    if (next !== undefined) next();  // the turn passes straight on, first come first served
    else this.free += 1;
  }

  async end(): Promise<void> {
    await this.pool.end().catch(() => {});
  }
}
