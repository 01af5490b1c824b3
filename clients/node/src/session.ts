// The session connection (docs/protocol.md sections 1 and 5): one dedicated pg.Client per
// Client that opens (or resumes) the session, LISTENs on its channel, runs the heartbeat while
// the client has waiters, and reconnects and resumes when it is lost.
//
// It refuses a connection pooler that shares server sessions, as the Python clients do
// (pggcl/core/policy.py): a fresh connection whose server session already carries a pggcl
// session (check_fresh_connection), and a server session that changes between two statements
// (check_session_kept, after the open and at every heartbeat). The client adds a third check
// on its calls: a pool connection that finds this session's own id in its server session.
import pg from "pg";

import type { Dispatcher } from "./dispatch.js";
import { parsePayload } from "./dispatch.js";
import { ClientClosedError, ConfigurationError, SessionLostError, translateError } from "./errors.js";
import * as q from "./queries.js";

/** Counters a client keeps; tests use them to prove what happened instead of timing it. */
export interface Stats {
  /** Statements run on the pool (acquire, take, release, recheck, cancel, renew, management). */
  calls: number;
  /** Acquires granted by pggcl.take, the one-round-trip fast path. */
  takes: number;
  /** Times an acquire started over (answer lost, session reclaimed). */
  startOvers: number;
  connects: number;
  sessionsOpened: number;
  sessionsLost: number;
  heartbeats: number;
  /** Statements sent on a quiet session connection so that the server's idle_session_timeout
   * does not end it (every third of the timeout in effect on it). */
  keepalives: number;
}

/** How often a quiet session connection sends a statement, given the idle_session_timeout in
 * effect on it (seconds, 0: none): a third of it (pggcl/core/policy.py keepalive_interval). */
export function keepaliveInterval(idleSessionTimeout: number): number | null {
  return idleSessionTimeout > 0 ? idleSessionTimeout / 3 : null;
}

const POOLER_FIX = "give pggcl a direct connection for its session (the sessionDsn option, or PGGCL_SESSION_DSN)"
  + " and send only its calls through the pooler, or use PgBouncer with pool_mode = session"
  + " and server_reset_query = DISCARD ALL";

/** A fresh server session must carry no pggcl session: else a pooler shares it. */
export function checkFresh(carried: string | null): void {
  if (carried) {
    throw new ConfigurationError(
      `the session connection reached a server session that already carries pggcl session ${carried}:`
      + ` a connection pooler is between pggcl and PostgreSQL; ${POOLER_FIX}`);
  }
}

/** The session connection must keep its server session from one statement to the next. */
export function checkKept(sessionId: number, setting: string | null): void {
  if (setting !== String(sessionId)) {
    throw new ConfigurationError(
      "the session connection does not keep its PostgreSQL session between statements"
      + ` (a connection pooler in transaction or statement mode?); ${POOLER_FIX}`);
  }
}

/** A call's server session must not be the session connection's: else a pooler shares it. */
export function checkCallApart(sessionId: number | null, carried: string | null): void {
  if (sessionId !== null && carried === String(sessionId)) {
    throw new ConfigurationError(
      `a call reached the server session of this client's own session connection (session ${sessionId}):`
      + ` a connection pooler in transaction or statement mode is in front of it; ${POOLER_FIX}`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Session {
  private conn: pg.Client | null = null;
  private ready: Promise<number> | null = null;
  private sessionId: number | null = null;
  private token: string | null = null;
  private channel: string | null = null;
  private closed = false;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  /** A third of the idle_session_timeout in effect on the session connection (ms), or null. */
  private keepaliveEvery: number | null = null;
  /** When the session connection last sent a statement (performance.now(), ms). */
  private lastStatement = 0;
  /** Set once a pooler was found in the way: every later call fails with it at once. */
  misconfigured: ConfigurationError | null = null;

  constructor(
    private readonly dsn: string,
    private readonly opts: {
      grace: number; heartbeatSeconds: number; connectTimeout: number; applicationName?: string | undefined;
      /** Set idle_session_timeout on the session connection (seconds); null: the server's. */
      idleSessionTimeout?: number | null | undefined;
    },
    private readonly dispatcher: Dispatcher,
    private readonly stats: Stats,
    /** Called when the session was reclaimed: the client's leases are gone. */
    private readonly onReclaimed: () => void,
  ) {}

  /** The session id as last known (null before the first open). */
  get current(): number | null {
    return this.sessionId;
  }

  /** The session id, once the session connection is up (opened or resumed). */
  id(): Promise<number> {
    if (this.closed) return Promise.reject(new ClientClosedError("the client is closed: make a new one"));
    if (this.misconfigured !== null) return Promise.reject(this.misconfigured);
    if (this.ready === null) {
      this.ready = this.connect();
      this.ready.catch(() => {
        this.ready = null;
      });
    }
    return this.ready;
  }

  private async connect(): Promise<number> {
    const conn = new pg.Client({
      connectionString: this.dsn, connectionTimeoutMillis: Math.ceil(this.opts.connectTimeout * 1000), keepAlive: true,
      ...(this.opts.applicationName === undefined ? {} : { application_name: this.opts.applicationName }),
    });
    conn.on("error", () => {});
    try {
      await conn.connect();
    } catch (err) {
      throw translateError(err);
    }
    this.stats.connects += 1;
    let lost = false;
    try {
      const idleMs = this.opts.idleSessionTimeout == null ? null : String(Math.round(this.opts.idleSessionTimeout * 1000));
      const [k] = (await conn.query<{ idle: number; carried: string | null }>(q.KEEPALIVES, [idleMs])).rows;
      const every = keepaliveInterval(k!.idle);
      this.keepaliveEvery = every === null ? null : every * 1000;
      checkFresh(k!.carried);
      let resumed = false;
      if (this.sessionId !== null) {
        resumed = await this.resume(conn);
        lost = !resumed;
      }
      if (!resumed) {
        const [row] = (await conn.query<{ carried: string | null; session_id: number; token: string; channel: string }>(
          q.OPEN_SESSION, [this.opts.grace])).rows;
        checkFresh(row!.carried);
        this.sessionId = row!.session_id;
        this.token = row!.token;
        this.channel = row!.channel;
        this.stats.sessionsOpened += 1;
      }
      conn.on("notification", (msg) => {
        if (msg.channel !== this.channel || msg.payload === undefined) return;
        const parsed = parsePayload(msg.payload);
        if (parsed !== null) this.dispatcher.deliver(parsed[0], parsed[1]);
      });
      await conn.query(q.listen(this.channel!));
      // After the LISTEN (as the Python clients): the check also shows that the LISTEN ran on
      // the session's server session, and pg_stat_activity shows it, not the secret channel.
      const [s] = (await conn.query<{ setting: string | null }>(q.SESSION_SETTING)).rows;
      checkKept(this.sessionId!, s!.setting);
    } catch (err) {
      const e = translateError(err);
      if (e instanceof ConfigurationError) this.misconfigured = e;
      await conn.end().catch(() => {});
      throw e;
    }
    conn.on("end", () => this.onLost(conn));
    this.conn = conn;
    this.lastStatement = performance.now();
    this.scheduleKeepalive();
    if (lost) {
      this.stats.sessionsLost += 1;
      this.onReclaimed();
      this.dispatcher.broadcast({ kind: "lost", detail: "" });
    } else {
      this.dispatcher.broadcast({ kind: "r", detail: "" });  // notifications may have been missed
    }
    return this.sessionId!;
  }

  /** resume_session: true, it is ours again; false, it was reclaimed meanwhile. */
  private async resume(conn: pg.Client): Promise<boolean> {
    for (let tries = 0; ; tries++) {
      try {
        const r = await conn.query<{ ok: boolean }>(q.RESUME_SESSION, [this.sessionId, this.token]);
        return r.rows[0]!.ok;
      } catch (err) {
        const e = translateError(err);
        // GC008: the server still sees the old connection alive; it goes soon.
        if (e instanceof SessionLostError && e.sqlstate === "GC008" && tries < 100) {
          await sleep(100);
          continue;
        }
        if (e instanceof SessionLostError) return false;  // GC007: wrong token; a new session
        throw e;
      }
    }
  }

  private onLost(conn: pg.Client): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.ready = null;
    if (this.closed || this.misconfigured !== null) return;
    // Resume at once, within the grace, so that leases survive; retry until the server answers.
    const again = (): void => {
      if (this.closed || this.misconfigured !== null || this.ready !== null) return;
      this.id().catch(() => setTimeout(again, 200));
    };
    again();
  }

  /** The engine says the session is gone (GC007): open a new one; every waiter queues again. */
  async reclaimed(): Promise<void> {
    const old = this.conn;
    this.conn = null;
    this.ready = null;
    this.sessionId = null;
    this.stats.sessionsLost += 1;
    this.onReclaimed();
    this.dispatcher.broadcast({ kind: "lost", detail: "" });
    await old?.end().catch(() => {});
    if (!this.closed) this.id().catch(() => {});
  }

  /** A pooler was found in the way: every waiter and every later call is told. */
  async misconfigure(error: ConfigurationError): Promise<void> {
    this.misconfigured ??= error;
    const conn = this.conn;
    this.conn = null;
    this.dispatcher.broadcast({ kind: "misconfigured", detail: error.message });
    if (conn !== null) {
      await conn.query(q.CLOSE_SESSION).catch(() => {});
      await conn.end().catch(() => {});
    }
  }

  /** Heartbeats while the client has waiters (docs/protocol.md, "Heartbeat"). */
  startHeartbeat(): void {
    if (this.heartbeatTimer !== null) return;
    const beat = async (): Promise<void> => {
      this.heartbeatTimer = null;
      if (this.closed || this.dispatcher.size === 0) return;
      let next = this.opts.heartbeatSeconds;
      try {
        const sid = await this.id();
        const conn = this.conn;
        if (conn !== null) {
          this.lastStatement = performance.now();
          const [r] = (await conn.query<{ next: number | null; setting: string | null }>(q.HEARTBEAT, [sid])).rows;
          this.stats.heartbeats += 1;
          checkKept(sid, r!.setting);
          if (r!.next !== null) next = Math.min(next, r!.next + 0.005);
        }
      } catch (err) {
        const e = translateError(err);
        if (e instanceof ConfigurationError) await this.misconfigure(e);
        else if (e instanceof SessionLostError && this.conn !== null) await this.reclaimed();
      }
      if (!this.closed && this.dispatcher.size > 0 && this.heartbeatTimer === null) {
        this.heartbeatTimer = setTimeout(() => void beat(), next * 1000);
      }
    };
    this.heartbeatTimer = setTimeout(() => void beat(), this.opts.heartbeatSeconds * 1000);
  }

  /** Keepalives (docs/protocol.md section 1): while the session connection has said nothing
   * for a third of the idle_session_timeout in effect on it, a cheap statement that also checks
   * that the server session is still ours; heartbeats count as statements. */
  private scheduleKeepalive(): void {
    if (this.keepaliveTimer !== null) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
    const every = this.keepaliveEvery;
    if (every === null || this.closed || this.conn === null) return;
    const due = Math.max(0, this.lastStatement + every - performance.now());
    this.keepaliveTimer = setTimeout(() => void this.keepalive(), due);
    this.keepaliveTimer.unref();
  }

  private async keepalive(): Promise<void> {
    this.keepaliveTimer = null;
    const conn = this.conn;
    const sid = this.sessionId;
    if (conn === null || sid === null || this.closed || this.keepaliveEvery === null) return;
    if (performance.now() - this.lastStatement >= this.keepaliveEvery - 1) {
      this.lastStatement = performance.now();
      try {
        const [r] = (await conn.query<{ setting: string | null }>(q.SESSION_SETTING)).rows;
        this.stats.keepalives += 1;
        checkKept(sid, r!.setting);
      } catch (err) {
        const e = translateError(err);
        if (e instanceof ConfigurationError) await this.misconfigure(e);
        return;  // a lost connection: its "end" reconnects, and the new one schedules its own
      }
    }
    if (this.conn === conn) this.scheduleKeepalive();
  }

  /** The server process of the session connection (for tests that kill it), or null. */
  get backendPid(): number | null {
    const conn = this.conn;
    return conn === null ? null : (conn as unknown as { processID: number }).processID;
  }

  /** Close the session (releasing what it holds) and its connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    if (this.keepaliveTimer !== null) clearTimeout(this.keepaliveTimer);
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) {
      await conn.query(q.CLOSE_SESSION).catch(() => {});
      await conn.end().catch(() => {});
    }
  }
}
