// The pggcl client for Node.js: the protocol of docs/protocol.md over node-postgres.
//
// One dedicated session connection per Client (open_session, LISTEN on the returned channel,
// heartbeat while it has waiters, reconnect + resume_session), plus a pg.Pool for the calls,
// which always pass session_id. Every acquire attempt carries a fresh request id, so that an
// attempt whose answer was lost is settled (cancelled, or released when granted) and retried.
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import pg from "pg";

import {
  AcquireConcurrencySlotTimeoutError,
  ClientClosedError,
  ConcurrencySlotAcquisitionError,
  ConfigurationError,
  LimitNotFoundError,
  SessionLostError,
  isUnavailable,
  translateError,
} from "./errors.js";

export type Mode = "concurrency" | "rate_limit";

export interface ClientOptions {
  /** Direct DSN for the session connection (behind a transaction pooler). */
  sessionDsn?: string;
  poolSize?: number;
  graceSeconds?: number;
  heartbeatSeconds?: number;
  /** How long a release keeps retrying while the database is unreachable. */
  retrySeconds?: number;
}

export interface AcquireOptions {
  occupy?: number;
  /** null: wait forever; 0: do not wait. */
  timeoutSeconds?: number | null;
  strict?: boolean;
  holder?: string | null;
  /** Concurrency only: the lease's TTL, renewed at a third of it while held. null: none. */
  leaseDuration?: number | null;
  /** Gives up waiting when aborted: nothing is left queued or held, and the call rejects with
   * the signal's reason. */
  signal?: AbortSignal;
}

/** Slots granted: what concurrency() hands its function (leaseId null when no names). */
export interface Grant {
  names: string[];
  occupy: number;
  leaseId: string | null;
}

export interface ConcurrencyLimit {
  name: string;
  limit: number;
  active: boolean;
  activeSlots: number;
  slotDecayPerSecond: number;
  waiting: number;
  created: Date;
  updated: Date;
  heldSlots: number;
  decayingSlots: number;
}

export interface Holder {
  leaseId: string;
  name: string;
  slots: number;
  holder: string | null;
  sessionId: number | null;
  since: Date;
  expires: Date | null;
}

export interface Waiter {
  waiterId: string;
  name: string;
  position: number;
  occupy: number;
  mode: Mode;
  holder: string | null;
  sessionId: number;
  since: Date;
}

/** What a waiter is told: granted, re-check, rejected (with why), session lost, client closed. */
export type EventKind = "g" | "r" | "e" | "lost" | "closed" | "abort";
export interface WaiterEvent {
  kind: EventKind;
  detail: string;
}

/** The waiter id and event of a notification payload, or null for anything else. */
export function parsePayload(payload: string): [string, WaiterEvent] | null {
  const m = /^([gre]):(\d+)(?::([\s\S]*))?$/.exec(payload);
  if (m === null) return null;
  return [m[2]!, { kind: m[1] as EventKind, detail: m[3] ?? "" }];
}

class Mailbox {
  private events: WaiterEvent[] = [];
  private wake: (() => void) | null = null;

  push(event: WaiterEvent): void {
    this.events.push(event);
    this.wake?.();
  }

  /** The next event, or null after `timeoutMs` (null: no limit). */
  async next(timeoutMs: number | null): Promise<WaiterEvent | null> {
    if (this.events.length === 0) {
      await new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        this.wake = () => {
          if (timer !== undefined) clearTimeout(timer);
          resolve();
        };
        if (timeoutMs !== null) timer = setTimeout(resolve, Math.max(0, timeoutMs));
      });
      this.wake = null;
    }
    return this.events.shift() ?? null;
  }
}

/** Routes events to waiters by id; keeps events that arrive before their acquire's reply. */
export class Dispatcher {
  private boxes = new Map<string, Mailbox>();
  private early = new Map<string, { since: number; events: WaiterEvent[] }>();
  private finished = new Set<string>();
  epoch = 0;

  constructor(private keepMs = 60_000) {}

  get size(): number {
    return this.boxes.size;
  }

  register(waiterId: string, box: Mailbox, epoch: number): void {
    this.boxes.set(waiterId, box);
    const early = this.early.get(waiterId);
    if (early !== undefined) {
      this.early.delete(waiterId);
      for (const e of early.events) box.push(e);
    }
    if (epoch !== this.epoch) box.push({ kind: "r", detail: "" });
    this.prune();
  }

  unregister(waiterId: string): void {
    if (this.boxes.delete(waiterId)) {
      this.finished.add(waiterId);
      if (this.finished.size > 4096) this.finished.delete(this.finished.values().next().value as string);
    }
  }

  deliver(waiterId: string, event: WaiterEvent): void {
    const box = this.boxes.get(waiterId);
    if (box !== undefined) {
      box.push(event);
      return;
    }
    if (this.finished.has(waiterId)) return;
    this.prune();
    const entry = this.early.get(waiterId) ?? { since: Date.now(), events: [] };
    entry.events.push(event);
    this.early.set(waiterId, entry);
  }

  broadcast(event: WaiterEvent): void {
    this.epoch += 1;
    for (const box of this.boxes.values()) box.push(event);
  }

  private prune(): void {
    const now = Date.now();
    for (const [id, { since }] of this.early) {
      if (now - since < this.keepMs) break;
      this.early.delete(id);
    }
  }
}

class StartOver extends Error {}
class Unreachable extends Error {}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const now = (): number => performance.now() / 1000;

function names(value: string | string[]): string[] {
  return typeof value === "string" ? [value] : [...value];
}

function describe(n: string[], occupy: number): string {
  return `${occupy} ${occupy === 1 ? "slot" : "slots"} on ${n.map((x) => `'${x}'`).join(", ")}`;
}

function limitRow(r: Record<string, unknown>): ConcurrencyLimit {
  return {
    name: r.name as string,
    limit: r.limit as number,
    active: r.active as boolean,
    activeSlots: r.active_slots as number,
    slotDecayPerSecond: r.slot_decay_per_second as number,
    waiting: r.waiting as number,
    created: r.created as Date,
    updated: r.updated as Date,
    heldSlots: r.held_slots as number,
    decayingSlots: r.decaying_slots as number,
  };
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export class Client {
  readonly dsn: string;
  private readonly sessionDsn: string;
  private readonly pool: pg.Pool;
  private readonly grace: number;
  private readonly heartbeatSeconds: number;
  private readonly retrySeconds: number;
  readonly dispatcher = new Dispatcher();
  private conn: pg.Client | null = null;
  private ready: Promise<number> | null = null;
  private sessionId: number | null = null;
  private token: string | null = null;
  private channel: string | null = null;
  private closed = false;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private readonly renewals = new Map<string, NodeJS.Timeout>();

  constructor(dsn: string | undefined = process.env.PGGCL_DSN, opts: ClientOptions = {}) {
    if (dsn === undefined || dsn === "") throw new ConfigurationError("no DSN: give one or set PGGCL_DSN");
    this.dsn = dsn;
    this.sessionDsn = opts.sessionDsn ?? process.env.PGGCL_SESSION_DSN ?? dsn;
    this.grace = opts.graceSeconds ?? 5;
    this.heartbeatSeconds = opts.heartbeatSeconds ?? 2;
    this.retrySeconds = opts.retrySeconds ?? 30;
    this.pool = new pg.Pool({ connectionString: dsn, max: opts.poolSize ?? 10 });
    this.pool.on("error", () => {});
  }

  // --- Calls -------------------------------------------------------------------------------

  private async query<R extends Record<string, unknown>>(sql: string, args: unknown[] = []): Promise<R[]> {
    if (this.closed) throw new ClientClosedError("the client is closed: make a new one");
    try {
      return (await this.pool.query<R>(sql, args)).rows;
    } catch (err) {
      throw translateError(err);
    }
  }

  /** `fn` retried while the database is unreachable, until `until` (seconds, now()); then Unreachable. */
  private async retrying<T>(fn: () => Promise<T>, until: number | null): Promise<T> {
    let pause = 0.05;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (!isUnavailable(err)) throw err;
        if (until !== null && now() + pause >= until) throw new Unreachable(String((err as Error).message));
        await sleep(pause * 1000);
        pause = Math.min(pause * 2, 2);
      }
    }
  }

  // --- The session -------------------------------------------------------------------------

  /** The session id, once the session connection is up (opened or resumed). */
  session(): Promise<number> {
    if (this.closed) return Promise.reject(new ClientClosedError("the client is closed: make a new one"));
    if (this.ready === null) {
      this.ready = this.connect();
      this.ready.catch(() => {
        this.ready = null;
      });
    }
    return this.ready;
  }

  private async connect(): Promise<number> {
    const conn = new pg.Client({ connectionString: this.sessionDsn });
    conn.on("error", () => {});
    try {
      await conn.connect();
    } catch (err) {
      throw translateError(err);
    }
    let lost = false;
    try {
      let resumed = false;
      if (this.sessionId !== null) {
        for (let tries = 0; ; tries++) {
          try {
            const r = await conn.query<{ ok: boolean }>("SELECT pggcl.resume_session($1, $2) AS ok", [this.sessionId, this.token]);
            resumed = r.rows[0]!.ok;
            break;
          } catch (err) {
            const e = translateError(err);
            // GC008: the server still sees the old connection alive; it goes soon.
            if (e instanceof SessionLostError && e.sqlstate === "GC008" && tries < 100) {
              await sleep(100);
              continue;
            }
            if (e instanceof SessionLostError) break;
            throw e;
          }
        }
        lost = !resumed;
      }
      if (!resumed) {
        const r = await conn.query<{ session_id: number; token: string; channel: string }>(
          "SELECT * FROM pggcl.open_session($1)", [this.grace]);
        const row = r.rows[0]!;
        this.sessionId = row.session_id;
        this.token = row.token;
        this.channel = row.channel;
      }
      conn.on("notification", (msg) => {
        if (msg.channel !== this.channel || msg.payload === undefined) return;
        const parsed = parsePayload(msg.payload);
        if (parsed !== null) this.dispatcher.deliver(parsed[0], parsed[1]);
      });
      await conn.query(`LISTEN ${quoteIdent(this.channel!)}`);
    } catch (err) {
      await conn.end().catch(() => {});
      throw translateError(err);
    }
    conn.on("end", () => this.onLost(conn));
    this.conn = conn;
    if (lost) {
      for (const timer of this.renewals.values()) clearInterval(timer);
      this.dispatcher.broadcast({ kind: "lost", detail: "" });
    } else {
      this.dispatcher.broadcast({ kind: "r", detail: "" });  // notifications may have been missed
    }
    return this.sessionId!;
  }

  private onLost(conn: pg.Client): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.ready = null;
    if (this.closed) return;
    // Resume at once, within the grace, so that leases survive.
    const again = (): void => {
      if (this.closed || this.ready !== null) return;
      this.session().catch(() => setTimeout(again, 200));
    };
    again();
  }

  private startHeartbeat(): void {
    if (this.heartbeatTimer !== null) return;
    const beat = async (): Promise<void> => {
      this.heartbeatTimer = null;
      if (this.closed || this.dispatcher.size === 0) return;
      let next = this.heartbeatSeconds;
      try {
        const sid = await this.session();
        const conn = this.conn;
        if (conn !== null) {
          const r = await conn.query<{ next: number | null }>("SELECT pggcl.heartbeat($1) AS next", [sid]);
          const soon = r.rows[0]!.next;
          if (soon !== null) next = Math.min(next, soon + 0.005);
        }
      } catch (err) {
        const e = translateError(err);
        if (e instanceof SessionLostError && this.conn !== null) {
          // The session is gone (reclaimed): a new one, and every waiter queues again.
          const old = this.conn;
          this.conn = null;
          this.ready = null;
          this.sessionId = null;
          await old.end().catch(() => {});
          this.session().catch(() => {});
        }
      }
      if (!this.closed && this.dispatcher.size > 0 && this.heartbeatTimer === null) {
        this.heartbeatTimer = setTimeout(() => void beat(), next * 1000);
      }
    };
    this.heartbeatTimer = setTimeout(() => void beat(), this.heartbeatSeconds * 1000);
  }

  // --- Acquiring ---------------------------------------------------------------------------

  /** Take the slots, waiting in the engine's queue; the lease id (null in rate-limit mode). */
  async acquire(nameOrNames: string | string[], mode: Mode, opts: AcquireOptions = {}): Promise<string | null> {
    const n = names(nameOrNames);
    const occupy = opts.occupy ?? 1;
    const timeout = opts.timeoutSeconds ?? null;
    if (n.length === 0) return null;
    opts.signal?.throwIfAborted();
    const deadline = timeout === null ? null : now() + timeout;
    const timedOut = (why = ""): AcquireConcurrencySlotTimeoutError =>
      new AcquireConcurrencySlotTimeoutError(
        `could not acquire ${describe(n, occupy)} within timeout_seconds=${timeout}${why ? `: ${why}` : ""}`);
    for (;;) {
      try {
        const sid = await this.retrying(() => this.session(), deadline);
        return await this.attempt(n, mode, occupy, opts, sid, deadline, timedOut);
      } catch (err) {
        if (err instanceof StartOver) continue;
        if (err instanceof Unreachable) throw timedOut(`the database was unreachable (${err.message})`);
        throw err;
      }
    }
  }

  private async attempt(
    n: string[], mode: Mode, occupy: number, opts: AcquireOptions, sid: number, deadline: number | null,
    timedOut: () => AcquireConcurrencySlotTimeoutError,
  ): Promise<string | null> {
    const requestId = randomUUID();
    const wait = deadline === null || deadline > now();
    const ttl = mode === "concurrency" ? (opts.leaseDuration === undefined ? null : opts.leaseDuration) : null;
    const holder = opts.holder ?? `${hostname()}:${process.pid}`;
    const epoch = this.dispatcher.epoch;  // a reconnect during the call: re-check after it
    let row: { granted: boolean; lease_id: string | null; waiter_id: string | null; retry_after: number | null; created_limits: string[] | null };
    try {
      [row] = (await this.query<typeof row>(
        "SELECT * FROM pggcl.acquire($1::text[], $2, $3, $4, $5, $6, $7, $8, $9)",
        [n, occupy, mode, opts.strict ?? false, ttl, holder, sid, wait, requestId])) as [typeof row];
    } catch (err) {
      if (isUnavailable(err)) {
        await this.settle(null, requestId, deadline);
        throw new StartOver();
      }
      throw err;
    }
    if (opts.signal?.aborted) {
      await this.settle(row.waiter_id, requestId, now());
      throw opts.signal.reason;
    }
    if (row.created_limits !== null && row.created_limits.length > 0) {
      process.emitWarning(`pggcl: created missing limit(s) ${row.created_limits.map((x) => `'${x}'`).join(", ")} inactive: they do not limit anything until activated`);
    }
    if (row.granted) return row.lease_id;
    if (row.waiter_id === null) throw timedOut();
    const leaseId = mode === "concurrency" ? row.lease_id : null;
    const waiterId = row.waiter_id;
    const box = new Mailbox();
    this.dispatcher.register(waiterId, box, epoch);
    this.startHeartbeat();
    const onAbort = (): void => box.push({ kind: "abort", detail: "" });
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      let retryAfter = row.retry_after;
      for (;;) {
        if (deadline !== null && now() >= deadline) return await this.giveUp(waiterId, requestId, mode, timedOut);
        let timeoutS: number | null = deadline === null ? null : deadline - now();
        if (retryAfter !== null) timeoutS = Math.min(timeoutS ?? Infinity, Math.max(retryAfter, 0.001));
        if (timeoutS !== null) timeoutS = Math.min(timeoutS, 86_400);
        const event = await box.next(timeoutS === null ? null : timeoutS * 1000);
        if (event === null) {
          if (deadline !== null && now() >= deadline) return await this.giveUp(waiterId, requestId, mode, timedOut);
        } else if (event.kind === "g") {
          return leaseId;
        } else if (event.kind === "e") {
          throw new ConcurrencySlotAcquisitionError(`cannot acquire ${describe(n, occupy)}: ${event.detail || "it can never be granted"}`);
        } else if (event.kind === "closed") {
          throw new ClientClosedError(`the client was closed while waiting for ${describe(n, occupy)}`);
        } else if (event.kind === "lost") {
          throw new StartOver();
        } else if (event.kind === "abort") {
          await this.settle(waiterId, requestId, now());
          throw opts.signal?.reason ?? new Error("aborted");
        }
        let status: string;
        try {
          const [r] = await this.retrying(
            () => this.query<{ status: string; retry_after: number | null }>(
              "SELECT * FROM pggcl.recheck($1, $2)", [waiterId, leaseId]), deadline);
          status = r!.status;
          retryAfter = r!.retry_after;
        } catch (err) {
          if (err instanceof Unreachable) {
            await this.settle(waiterId, requestId, now());
          }
          throw err;
        }
        if (status === "granted") return leaseId;
        if (status === "rejected") throw new ConcurrencySlotAcquisitionError(`cannot acquire ${describe(n, occupy)}: a limit was lowered below the request`);
        if (status === "gone") {
          if (mode === "rate_limit") return null;  // a rate-limit grant leaves no trace
          throw new StartOver();
        }
      }
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      this.dispatcher.unregister(waiterId);
    }
  }

  private async giveUp(waiterId: string, requestId: string, mode: Mode, timedOut: () => Error): Promise<null> {
    const status = await this.settle(waiterId, requestId, now());
    if (status === "gone" && mode === "rate_limit") return null;  // raced the timeout: consumed
    throw timedOut();
  }

  /** Leave nothing queued or held for the attempt `requestId`; cancel's answer. */
  private async settle(waiterId: string | null, requestId: string, until: number | null): Promise<string | null> {
    const retryUntil = Math.max(until ?? 0, now() + this.retrySeconds);
    const [r] = await this.retrying(
      () => this.query<{ status: string }>("SELECT pggcl.cancel($1, $2) AS status", [waiterId, requestId]), retryUntil);
    if (r!.status === "granted") {
      await this.retrying(() => this.query("SELECT pggcl.release($1)", [requestId]), retryUntil);
    }
    return r!.status;
  }

  /** Give back a lease; false when it was no longer held. */
  async release(leaseId: string): Promise<boolean> {
    const timer = this.renewals.get(leaseId);
    if (timer !== undefined) {
      clearInterval(timer);
      this.renewals.delete(leaseId);
    }
    const [r] = await this.retrying(
      () => this.query<{ ok: boolean }>("SELECT pggcl.release($1) AS ok", [leaseId]), now() + this.retrySeconds);
    return r!.ok;
  }

  /** Hold `occupy` slots on every limit in `names` while `fn` runs. */
  async concurrency<T>(nameOrNames: string | string[], opts: AcquireOptions, fn: (grant: Grant) => Promise<T> | T): Promise<T> {
    const leaseDuration = opts.leaseDuration === undefined ? 300 : opts.leaseDuration;
    const leaseId = await this.acquire(nameOrNames, "concurrency", { ...opts, leaseDuration });
    if (leaseId !== null && leaseDuration !== null) {
      const timer = setInterval(() => {
        this.query("SELECT pggcl.renew($1, $2)", [leaseId, leaseDuration]).catch(() => {});
      }, (leaseDuration / 3) * 1000);
      timer.unref();
      this.renewals.set(leaseId, timer);
    }
    try {
      return await fn({ names: names(nameOrNames), occupy: opts.occupy ?? 1, leaseId });
    } finally {
      if (leaseId !== null) {
        try {
          await this.release(leaseId);
        } catch (err) {
          process.emitWarning(`pggcl: could not release lease ${leaseId}: ${String(err)}`);
        }
      }
    }
  }

  /** Take `occupy` slots of a rate limit (they decay away); waits until they fit. */
  async rateLimit(nameOrNames: string | string[], opts: Omit<AcquireOptions, "holder" | "leaseDuration"> = {}): Promise<void> {
    await this.acquire(nameOrNames, "rate_limit", opts);
  }

  // --- Managing ----------------------------------------------------------------------------

  async createLimit(name: string, limit: number, slotDecayPerSecond = 0, active = true): Promise<ConcurrencyLimit> {
    const [r] = await this.query("SELECT * FROM pggcl.create_limit($1, $2, $3, $4)", [name, limit, slotDecayPerSecond, active]);
    return limitRow(r!);
  }

  async readLimit(name: string): Promise<ConcurrencyLimit> {
    const rows = await this.query("SELECT * FROM pggcl.limits WHERE name = $1", [name]);
    if (rows.length === 0) throw new LimitNotFoundError(`global concurrency limit '${name}' not found`);
    return limitRow(rows[0]!);
  }

  async listLimits(): Promise<ConcurrencyLimit[]> {
    return (await this.query("SELECT * FROM pggcl.limits ORDER BY name")).map(limitRow);
  }

  async updateLimit(
    name: string,
    change: { limit?: number; slotDecayPerSecond?: number; active?: boolean; newName?: string },
  ): Promise<ConcurrencyLimit> {
    const [r] = await this.query("SELECT * FROM pggcl.update_limit($1, $2, $3, $4, $5)", [
      name, change.limit ?? null, change.slotDecayPerSecond ?? null, change.active ?? null, change.newName ?? null]);
    return limitRow(r!);
  }

  async deleteLimit(name: string): Promise<boolean> {
    const [r] = await this.query<{ ok: boolean }>("SELECT pggcl.delete_limit($1) AS ok", [name]);
    return r!.ok;
  }

  async holders(name?: string): Promise<Holder[]> {
    const rows = await this.query(
      "SELECT * FROM pggcl.holders WHERE $1::text IS NULL OR name = $1 ORDER BY since, lease_id", [name ?? null]);
    return rows.map((r) => ({
      leaseId: r.lease_id as string, name: r.name as string, slots: r.slots as number,
      holder: r.holder as string | null, sessionId: r.session_id as number | null,
      since: r.since as Date, expires: r.expires as Date | null,
    }));
  }

  async queue(name?: string): Promise<Waiter[]> {
    const rows = await this.query(
      "SELECT * FROM pggcl.queue WHERE $1::text IS NULL OR name = $1 ORDER BY name, position", [name ?? null]);
    return rows.map((r) => ({
      waiterId: r.waiter_id as string, name: r.name as string, position: r.position as number,
      occupy: r.occupy as number, mode: r.mode as Mode, holder: r.holder as string | null,
      sessionId: r.session_id as number, since: r.since as Date,
    }));
  }

  /** The session id (opening the session when needed); for tests and diagnostics. */
  async sessionIdForTests(): Promise<number> {
    return this.session();
  }

  /** Kill the session connection from the server side (for tests of resume). */
  async dropSessionConnectionForTests(): Promise<void> {
    const conn = this.conn;
    if (conn === null) return;
    const pid = (conn as unknown as { processID: number }).processID;
    await this.query("SELECT pg_terminate_backend($1)", [pid]);
  }

  /** Close the session (releasing what it holds) and every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    const conn = this.conn;
    this.dispatcher.broadcast({ kind: "closed", detail: "" });
    this.closed = true;
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    for (const timer of this.renewals.values()) clearInterval(timer);
    this.conn = null;
    if (conn !== null) {
      await conn.query("SELECT pggcl.close_session()").catch(() => {});
      await conn.end().catch(() => {});
    }
    await this.pool.end().catch(() => {});
  }
}

