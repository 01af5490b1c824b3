// The pggcl client for Node.js: the protocol of docs/protocol.md over node-postgres.
//
// One dedicated session connection per Client (session.ts), plus a bounded pool for the calls
// (pool.ts), which always pass session_id. The decisions follow the Python core
// (pggcl/core/acquiring.py): every acquire attempt carries a fresh request id, so that an
// attempt whose answer was lost is settled by that id (cancelled, or released when granted)
// and started over, at most `maxRetries` times; the usual case, one free limit, is one round
// trip (pggcl.take), and a limit where the last request queued goes straight to pggcl.acquire.
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";

import { Dispatcher, Mailbox } from "./dispatch.js";
import {
  AcquireConcurrencySlotTimeoutError,
  ClientClosedError,
  ConcurrencySlotAcquisitionError,
  ConfigurationError,
  LimitNotFoundError,
  PoolTimeoutError,
  SessionLostError,
  ValidationError,
  isUnavailable,
} from "./errors.js";
import { Pool } from "./pool.js";
import * as q from "./queries.js";
import { Session, type Stats, checkCallApart } from "./session.js";

export type Mode = "concurrency" | "rate_limit";

export interface ClientOptions {
  /** Direct DSN for the session connection, when `dsn` is a transaction pooler's (PgBouncer). */
  sessionDsn?: string;
  /** Connections for the calls (the session connection is extra). */
  poolSize?: number;
  /** Seconds a call waits for a free pool connection before PoolTimeoutError. */
  poolTimeout?: number;
  /** Seconds to wait for a new connection (then the database counts as unreachable). */
  connectTimeout?: number;
  graceSeconds?: number;
  heartbeatSeconds?: number;
  /** How long a release keeps retrying while the database is unreachable. */
  retrySeconds?: number;
  /** application_name of every connection (pg_stat_activity shows it). */
  applicationName?: string;
  /** Set PostgreSQL's idle_session_timeout on the session connection (seconds, 3 to 86400):
   * the server ends it after this long without a statement, so a client that vanished while
   * its server session stays open (PgBouncer in session mode without a reset query) is seen
   * gone after this plus its grace. null (the default): the server's setting applies. Either
   * way the session connection sends a cheap statement every third of the timeout in effect
   * while it has nothing else to say (as the Python clients' idle_session_timeout_seconds). */
  idleSessionTimeoutSeconds?: number | null;
}

export interface AcquireOptions {
  occupy?: number;
  /** null: wait forever; 0: do not wait. */
  timeoutSeconds?: number | null;
  /** null: no bound. 0: do not queue (slots not free at once raise
   * ConcurrencySlotAcquisitionError). N: start over at most N times (answer lost, session
   * reclaimed); once more raises ConcurrencySlotAcquisitionError, nothing left behind. */
  maxRetries?: number | null;
  strict?: boolean;
  holder?: string | null;
  /** The lease's TTL in seconds (concurrency only). concurrency(): 300 by default, set by
   * the first renewal (within 1 s) and renewed at a third of it while held. acquire(): given
   * to the engine at once, not renewed. null: none. */
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

/** The upper bounds, in seconds, of the buckets of the wait and hold histograms of
 * ConcurrencyLimit (Prometheus's `le`: a bound is inclusive), the last +Inf; as the engine's. */
export const HISTOGRAM_BOUNDS: readonly number[] = Object.freeze(
  [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600, Infinity]);

/** A limit as it stands now (the Python clients' ConcurrencyLimit, in camelCase).
 *
 * `activeSlots` is the occupancy at the moment of reading: `heldSlots` (held by leases) plus
 * `decayingSlots` (the rate-limit bucket, which decays at `slotDecayPerSecond`); `waiting`
 * counts queued requests.
 *
 * Then the engine's counters, kept with each change they count since the limit was created
 * (or its database upgraded to revision 0009); they only grow (docs/protocol.md, "The
 * counters of pggcl.limits"). They are bigint columns, which node-postgres hands over as
 * strings: here they are numbers, exact up to Number.MAX_SAFE_INTEGER (2^53 - 1, some 285
 * years of a million grants a second). Ids stay strings (`Waiter.waiterId`): they are compared,
 * never counted. */
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
  /** Requests granted, at once or after queuing. */
  grants: number;
  /** Requests that had to queue. */
  enqueued: number;
  /** Refusals without waiting (`timeoutSeconds: 0`) when the limit was full or had a queue
   * (Prefect's denied_slots, counted in requests). */
  denied: number;
  /** Queued requests that left without a grant (timed out, aborted, their session gone). */
  gaveUp: number;
  /** Queued requests told they can never be granted (the limit was lowered below them). */
  rejected: number;
  /** Slots taken back from dead holders and expired TTL leases. */
  reclaimedSlots: number;
  /** Wait time (queued to granted, 0 for a grant at once) of every grant, in seconds: a
   * count, a sum, and cumulative buckets, one per bound of HISTOGRAM_BOUNDS (element i counts
   * those of at most HISTOGRAM_BOUNDS[i]; the last equals the count). */
  waitSecondsCount: number;
  waitSecondsSum: number;
  waitSecondsBuckets: number[];
  /** Hold time (granted to released or reclaimed) of every lease that ended, as the wait
   * time; holdSecondsSum / holdSecondsCount is Prefect's avg_slot_occupancy_seconds. Rate
   * limits hold nothing: these stay 0. */
  holdSecondsCount: number;
  holdSecondsSum: number;
  holdSecondsBuckets: number[];
  /** The template (a name with `*`) this limit was made from; null for a plain limit. */
  template: string | null;
  /** Changed individually since it was made from its template, which then leaves it alone. */
  customized: boolean;
}

/** A template: a limit name with `*` (one or more characters). A request naming a missing limit
 *  that matches it creates that limit, active, with these values; changing it changes those of
 *  its instances not changed individually; an instance unused for `idleSeconds` is removed. */
export interface LimitTemplate {
  name: string;
  limit: number;
  slotDecayPerSecond: number;
  active: boolean;
  idleSeconds: number;
  /** Instances (limits made from it) that exist now. */
  instances: number;
  created: Date;
  updated: Date;
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

/** The limits on which this client's last request had to queue: there pggcl.take would only be
 * refused, so acquire goes straight to pggcl.acquire (one round trip less where the limit is
 * busiest). A request granted at once clears the name. A hint: a lost race costs one call. */
class Contention {
  private names = new Set<string>();
  worthTaking(name: string): boolean {
    return !this.names.has(name);
  }
  queued(name: string): void {
    if (this.names.size >= 1024) this.names.clear();
    this.names.add(name);
  }
  grantedAtOnce(name: string): void {
    this.names.delete(name);
  }
}

class StartOver extends Error {}
class Unreachable extends Error {}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const now = (): number => performance.now() / 1000;
const FIRST_RENEWAL = 1.0;  // seconds after the grant at most: a shorter block costs no renewal

function names(value: string | string[]): string[] {
  return typeof value === "string" ? [value] : [...value];
}

function describe(n: string[], occupy: number): string {
  return `${occupy} ${occupy === 1 ? "slot" : "slots"} on ${n.map((x) => `'${x}'`).join(", ")}`;
}

/** A bigint count (node-postgres: a string) as a number; see ConcurrencyLimit. */
function count(value: unknown): number {
  return Number(value as string | number);
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
    grants: count(r.grants),
    enqueued: count(r.enqueued),
    denied: count(r.denied),
    gaveUp: count(r.gave_up),
    rejected: count(r.rejected),
    reclaimedSlots: count(r.reclaimed_slots),
    waitSecondsCount: count(r.wait_seconds_count),
    waitSecondsSum: r.wait_seconds_sum as number,
    waitSecondsBuckets: (r.wait_seconds_buckets as string[]).map(count),
    holdSecondsCount: count(r.hold_seconds_count),
    holdSecondsSum: r.hold_seconds_sum as number,
    holdSecondsBuckets: (r.hold_seconds_buckets as string[]).map(count),
    template: r.template as string | null,
    customized: r.customized as boolean,
  };
}

function templateRow(r: Record<string, unknown>): LimitTemplate {
  return {
    name: r.name as string,
    limit: r.limit as number,
    slotDecayPerSecond: r.slot_decay_per_second as number,
    active: r.active as boolean,
    idleSeconds: r.idle_seconds as number,
    instances: r.instances as number,
    created: r.created as Date,
    updated: r.updated as Date,
  };
}

function checkedMaxRetries(value: number | null | undefined): number | null {
  if (value === undefined || value === null) return null;
  if (!Number.isInteger(value) || value < 0) {
    throw new ValidationError(`invalid maxRetries: ${value}; it must be null or a whole number, 0 or more`, { field: "max_retries" });
  }
  return value;
}

type AcquireRow = {
  granted: boolean; lease_id: string | null; waiter_id: string | null; retry_after: number | null;
  created_limits: string[] | null; carried: string | null;
};

export class Client {
  readonly dsn: string;
  readonly stats: Stats = {
    calls: 0, takes: 0, startOvers: 0, connects: 0, sessionsOpened: 0, sessionsLost: 0, heartbeats: 0, keepalives: 0,
  };
  readonly dispatcher = new Dispatcher();
  private readonly pool: Pool;
  private readonly session: Session;
  private readonly retrySeconds: number;
  private readonly contention = new Contention();
  private closed = false;
  private readonly renewals = new Map<string, NodeJS.Timeout>();

  constructor(dsn: string | undefined = process.env.PGGCL_DSN, opts: ClientOptions = {}) {
    if (dsn === undefined || dsn === "") throw new ConfigurationError("no DSN: give one or set PGGCL_DSN");
    this.dsn = dsn;
    const connectTimeout = opts.connectTimeout ?? 10;
    const idle = opts.idleSessionTimeoutSeconds ?? null;
    if (idle !== null && !(idle >= 3 && idle <= 86_400)) {
      throw new ValidationError(`invalid idleSessionTimeoutSeconds: ${idle}; it must be null or seconds from 3 to 86400`,
        { field: "idle_session_timeout_seconds" });
    }
    this.retrySeconds = opts.retrySeconds ?? 30;
    this.pool = new Pool(dsn, opts.poolSize ?? 10, opts.poolTimeout ?? 30, connectTimeout, opts.applicationName);
    const sessionDsn = opts.sessionDsn ?? process.env.PGGCL_SESSION_DSN ?? dsn;
    this.session = new Session(
      sessionDsn,
      {
        grace: opts.graceSeconds ?? 5, heartbeatSeconds: opts.heartbeatSeconds ?? 2, connectTimeout,
        applicationName: opts.applicationName, idleSessionTimeout: idle,
      },
      this.dispatcher, this.stats, () => this.leasesLost());
  }

  // --- Calls -------------------------------------------------------------------------------

  private async query<R extends Record<string, unknown>>(sql: string, args: unknown[] = []): Promise<R[]> {
    if (this.closed) throw new ClientClosedError("the client is closed: make a new one");
    if (this.session.misconfigured !== null) throw this.session.misconfigured;
    this.stats.calls += 1;
    return this.pool.query<R>(sql, args);
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

  private leasesLost(): void {
    for (const timer of this.renewals.values()) clearTimeout(timer);
    this.renewals.clear();
    process.emitWarning("pggcl: the session was reclaimed: the leases this client held are gone and their slots may be given to others");
  }

  // --- Acquiring ---------------------------------------------------------------------------

  /** Take the slots, waiting in the engine's queue; the lease id (null in rate-limit mode). */
  async acquire(nameOrNames: string | string[], mode: Mode, opts: AcquireOptions = {}): Promise<string | null> {
    const n = names(nameOrNames);
    const occupy = opts.occupy ?? 1;
    const maxRetries = checkedMaxRetries(opts.maxRetries);
    const noQueue = maxRetries === 0 && opts.timeoutSeconds !== 0;
    const timeout = noQueue ? 0 : opts.timeoutSeconds ?? null;
    if (n.length === 0) return null;
    opts.signal?.throwIfAborted();
    const deadline = timeout === null ? null : now() + timeout;
    const timedOut = (why = ""): Error => noQueue
      ? new ConcurrencySlotAcquisitionError(`could not acquire ${describe(n, occupy)}: not free at once, and maxRetries=0: the request does not queue`)
      : new AcquireConcurrencySlotTimeoutError(
        `could not acquire ${describe(n, occupy)} within timeout_seconds=${timeout}${why ? `: ${why}` : ""}`);
    const ttl = mode === "concurrency" ? (opts.leaseDuration ?? null) : null;
    let starts = 0;
    for (;;) {
      try {
        const sid = await this.retrying(() => this.session.id(), deadline);
        return await this.attempt(n, mode, occupy, ttl, opts, sid, deadline, timedOut);
      } catch (err) {
        if (err instanceof Unreachable) throw timedOut(`the database was unreachable (${err.message})`);
        if (!(err instanceof StartOver)) throw err;
        this.stats.startOvers += 1;
        starts += 1;
        if (maxRetries !== null && starts > maxRetries) {
          throw new ConcurrencySlotAcquisitionError(
            `could not acquire ${describe(n, occupy)}: gave up after maxRetries=${maxRetries} retries`
            + " (the request had to start over: its answer was lost, or its session was reclaimed)");
        }
      }
    }
  }

  /** One call of an attempt. Its answer lost (the connection dropped): settle the attempt by
   * its request id and start over. A busy pool: the call never left, nothing to settle. */
  private async asking<R extends Record<string, unknown>>(
    sql: string, args: unknown[], requestId: string, deadline: number | null,
  ): Promise<R> {
    let row: R;
    try {
      [row] = (await this.query<R>(sql, args)) as [R];
    } catch (err) {
      if (isUnavailable(err)) {
        await this.settle(null, requestId, deadline);
        throw new StartOver();
      }
      if (err instanceof SessionLostError && err.sqlstate === "GC007") {
        await this.session.reclaimed();  // the engine reclaimed our session: a new one
        throw new StartOver();
      }
      throw err;
    }
    const carried = (row as { carried?: string | null }).carried ?? null;
    try {
      checkCallApart(this.session.current, carried);
    } catch (err) {
      await this.settle(null, requestId, now()).catch(() => {});
      await this.session.misconfigure(err as ConfigurationError);
      throw err;
    }
    return row;
  }

  private async attempt(
    n: string[], mode: Mode, occupy: number, ttl: number | null, opts: AcquireOptions, sid: number,
    deadline: number | null, timedOut: (why?: string) => Error,
  ): Promise<string | null> {
    const requestId = randomUUID();
    const wait = deadline === null || deadline > now();
    const holder = opts.holder ?? `${hostname()}:${process.pid}`;
    const epoch = this.dispatcher.epoch;  // a reconnect during the call: re-check after it
    const oneName = n.length === 1 ? n[0]! : null;
    if (mode === "concurrency" && ttl === null && oneName !== null && this.contention.worthTaking(oneName)) {
      const took = await this.asking<{ ok: boolean }>(q.TAKE, [oneName, occupy, sid, holder, requestId], requestId, deadline);
      if (took.ok) {
        this.stats.takes += 1;
        if (opts.signal?.aborted) {
          await this.settle(null, requestId, now());
          throw opts.signal.reason;
        }
        return requestId;
      }
    }
    const row = await this.asking<AcquireRow>(
      q.ACQUIRE, [n, occupy, mode, opts.strict ?? false, ttl, holder, sid, wait, requestId], requestId, deadline);
    if (opts.signal?.aborted) {
      await this.settle(row.waiter_id, requestId, now());
      throw opts.signal.reason;
    }
    if (row.created_limits !== null && row.created_limits.length > 0) {
      process.emitWarning(`pggcl: created missing limit(s) ${row.created_limits.map((x) => `'${x}'`).join(", ")} inactive: they do not limit anything until activated`);
    }
    if (oneName !== null) {
      if (row.granted) this.contention.grantedAtOnce(oneName);
      else this.contention.queued(oneName);
    }
    if (row.granted) return row.lease_id;
    if (row.waiter_id === null) throw timedOut();
    return this.waitForGrant(n, mode, occupy, opts, row, requestId, epoch, deadline, timedOut);
  }

  private async waitForGrant(
    n: string[], mode: Mode, occupy: number, opts: AcquireOptions, row: AcquireRow, requestId: string,
    epoch: number, deadline: number | null, timedOut: (why?: string) => Error,
  ): Promise<string | null> {
    const leaseId = mode === "concurrency" ? row.lease_id : null;
    const waiterId = row.waiter_id!;
    const box = new Mailbox();
    this.dispatcher.register(waiterId, box, epoch);
    this.session.startHeartbeat();
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
        } else if (event.kind === "misconfigured") {
          throw this.session.misconfigured ?? new ConfigurationError(event.detail);
        } else if (event.kind === "lost") {
          throw new StartOver();
        } else if (event.kind === "abort") {
          await this.settle(waiterId, requestId, now());
          throw opts.signal?.reason ?? new Error("aborted");
        }
        let r: { status: string; retry_after: number | null };
        try {
          [r] = (await this.retrying(
            () => this.query<typeof r>(q.RECHECK, [waiterId, leaseId]), deadline)) as [typeof r];
        } catch (err) {
          // Unreachable until the deadline, a busy pool, a failure: leave nothing behind.
          const status = await this.settle(waiterId, requestId, now()).catch(() => null);
          if (!(err instanceof Unreachable)) throw err;
          if (status === "granted" && mode === "rate_limit") return null;  // granted meanwhile: consumed
          throw timedOut(`the database was unreachable (${err.message})`);
        }
        retryAfter = r.retry_after;
        if (r.status === "granted") return leaseId;
        if (r.status === "rejected") throw new ConcurrencySlotAcquisitionError(`cannot acquire ${describe(n, occupy)}: a limit was lowered below the request`);
        // Not granted (since revision 0010 a rate grant says 'granted' too): reclaimed with its
        // session, dropped, or rejected while the 'e:' was missed. Queue again.
        if (r.status === "gone") throw new StartOver();
      }
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      this.dispatcher.unregister(waiterId);
    }
  }

  private async giveUp(waiterId: string, requestId: string, mode: Mode, timedOut: () => Error): Promise<null> {
    const status = await this.settle(waiterId, requestId, now());
    if (status === "granted" && mode === "rate_limit") return null;  // raced the timeout: consumed
    throw timedOut();
  }

  /** Leave nothing queued or held for the attempt `requestId` (its lease id): cancel it, and
   * release it when it was granted. `waiterId` null: the engine finds it by the request id.
   * Retried while unreachable, for `retrySeconds` at least; past that it is done in the
   * background once the database answers (null). Returns cancel's answer. */
  private async settle(waiterId: string | null, requestId: string, until: number | null): Promise<string | null> {
    const retryUntil = Math.max(until ?? 0, now() + this.retrySeconds);
    let status: string;
    try {
      const [r] = await this.retrying(() => this.settling<{ status: string }>(q.CANCEL, [waiterId, requestId]), retryUntil);
      status = r!.status;
    } catch (err) {
      if (!(err instanceof Unreachable)) throw err;
      this.later(() => this.settle(waiterId, requestId, null));
      return null;
    }
    if (status === "granted") await this.releaseOrLater(requestId, retryUntil);
    return status;
  }

  /** release(leaseId), retried until `until`; past it, in the background. */
  private async releaseOrLater(leaseId: string, until: number): Promise<boolean> {
    try {
      const [r] = await this.retrying(() => this.settling<{ ok: boolean }>(q.RELEASE, [leaseId]), until);
      return r!.ok;
    } catch (err) {
      if (!(err instanceof Unreachable)) throw err;
      this.later(() => this.releaseOrLater(leaseId, now() + this.retrySeconds));
      process.emitWarning(`pggcl: could not release lease ${leaseId} (${err.message}): it is released as soon as the database answers`);
      return true;
    }
  }

  /** Run a clean-up in the background, again and again while the database is unreachable,
   * until it has run or the client is closed (closing the session releases what it held). */
  private later(cleanUp: () => Promise<unknown>): void {
    const run = (): void => {
      if (this.closed) return;
      cleanUp().catch(() => setTimeout(run, 1000).unref());
    };
    setTimeout(run, 1000).unref();
  }

  /** A clean-up call: a busy pool is waited out (the call must run), not raised. */
  private async settling<R extends Record<string, unknown>>(sql: string, args: unknown[]): Promise<R[]> {
    for (;;) {
      try {
        this.stats.calls += 1;
        return await this.pool.query<R>(sql, args);
      } catch (err) {
        if (!(err instanceof PoolTimeoutError)) throw err;
      }
    }
  }

  /** Give back a lease; false when it was no longer held. */
  async release(leaseId: string): Promise<boolean> {
    const timer = this.renewals.get(leaseId);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.renewals.delete(leaseId);
    }
    if (this.closed) throw new ClientClosedError("the client is closed: make a new one");
    return this.releaseOrLater(leaseId, now() + this.retrySeconds);
  }

  /** Renew `leaseId` to `ttl` seconds within FIRST_RENEWAL (that sets its TTL: the grant had
   * none), then every third of `ttl`, until released. */
  private keepRenewed(leaseId: string, ttl: number): void {
    const renew = (): void => {
      this.query<{ ok: boolean }>(q.RENEW, [leaseId, ttl]).then(([r]) => {
        if (!this.renewals.has(leaseId)) return;
        if (r!.ok) schedule(ttl / 3);
        else {
          this.renewals.delete(leaseId);
          process.emitWarning(`pggcl: lease ${leaseId} was lost while held (its renewal was refused): the limit may be exceeded`);
        }
      }, () => {
        if (this.renewals.has(leaseId)) schedule(Math.min(1, ttl / 3));  // unreachable: try again soon
      });
    };
    const schedule = (seconds: number): void => {
      const timer = setTimeout(renew, seconds * 1000);
      timer.unref();
      this.renewals.set(leaseId, timer);
    };
    schedule(Math.min(FIRST_RENEWAL, ttl / 3));
  }

  /** Hold `occupy` slots on every limit in `names` while `fn` runs. */
  async concurrency<T>(nameOrNames: string | string[], opts: AcquireOptions, fn: (grant: Grant) => Promise<T> | T): Promise<T> {
    const leaseDuration = opts.leaseDuration === undefined ? 300 : opts.leaseDuration;
    if (leaseDuration !== null && !(leaseDuration > 0 && leaseDuration <= 315_360_000)) {
      throw new ValidationError(`invalid leaseDuration: ${leaseDuration}; it must be null or seconds above 0, at most 315360000`, { field: "lease_duration" });
    }
    // The grant takes no TTL (pggcl.take has no room for one): the first renewal sets it.
    const leaseId = await this.acquire(nameOrNames, "concurrency", { ...opts, leaseDuration: null });
    if (leaseId !== null && leaseDuration !== null) this.keepRenewed(leaseId, leaseDuration);
    try {
      return await fn({ names: names(nameOrNames), occupy: opts.occupy ?? 1, leaseId });
    } finally {
      if (leaseId !== null) {
        try {
          if (!(await this.release(leaseId))) process.emitWarning(`pggcl: lease ${leaseId} was gone when released: it was reclaimed`);
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

  /** Create a limit; a name with `*` creates a template (`idleSeconds`: how long an unused
   *  instance is kept, default an hour). */
  async createLimit(
    name: string, limit: number, slotDecayPerSecond = 0, active = true, idleSeconds?: number,
  ): Promise<ConcurrencyLimit> {
    const [r] = await this.query(q.CREATE_LIMIT, [name, limit, slotDecayPerSecond, active, idleSeconds ?? null]);
    return limitRow(r!);
  }

  /** Every template, sorted by name, with how many instances each has. */
  async listTemplates(): Promise<LimitTemplate[]> {
    return (await this.query(q.LIST_TEMPLATES)).map(templateRow);
  }

  async readLimit(name: string): Promise<ConcurrencyLimit> {
    const rows = await this.query(q.READ_LIMIT, [name]);
    if (rows.length === 0) throw new LimitNotFoundError(`global concurrency limit '${name}' not found`);
    return limitRow(rows[0]!);
  }

  async listLimits(): Promise<ConcurrencyLimit[]> {
    return (await this.query(q.LIST_LIMITS)).map(limitRow);
  }

  async updateLimit(
    name: string,
    change: { limit?: number; slotDecayPerSecond?: number; active?: boolean; newName?: string; idleSeconds?: number },
  ): Promise<ConcurrencyLimit> {
    const [r] = await this.query(q.UPDATE_LIMIT, [
      name, change.limit ?? null, change.slotDecayPerSecond ?? null, change.active ?? null, change.newName ?? null,
      change.idleSeconds ?? null]);
    return limitRow(r!);
  }

  async deleteLimit(name: string): Promise<boolean> {
    const [r] = await this.query<{ ok: boolean }>(q.DELETE_LIMIT, [name]);
    return r!.ok;
  }

  async holders(name?: string): Promise<Holder[]> {
    const rows = await this.query(q.HOLDERS, [name ?? null]);
    return rows.map((r) => ({
      leaseId: r.lease_id as string, name: r.name as string, slots: r.slots as number,
      holder: r.holder as string | null, sessionId: r.session_id as number | null,
      since: r.since as Date, expires: r.expires as Date | null,
    }));
  }

  async queue(name?: string): Promise<Waiter[]> {
    const rows = await this.query(q.QUEUE, [name ?? null]);
    return rows.map((r) => ({
      waiterId: r.waiter_id as string, name: r.name as string, position: r.position as number,
      occupy: r.occupy as number, mode: r.mode as Mode, holder: r.holder as string | null,
      sessionId: r.session_id as number, since: r.since as Date,
    }));
  }

  /** The session id (opening the session when needed); for tests and diagnostics. */
  async sessionIdForTests(): Promise<number> {
    return this.session.id();
  }

  /** The server process of the session connection, or null while it is down (for tests). */
  get sessionBackendPidForTests(): number | null {
    return this.session.backendPid;
  }

  /** Callers waiting for a pool connection now (for tests). */
  get poolWaitingForTests(): number {
    return this.pool.waiting;
  }

  /** Kill the session connection from the server side (for tests of resume). */
  async dropSessionConnectionForTests(): Promise<void> {
    const pid = this.session.backendPid;
    if (pid !== null) await this.query("SELECT pg_terminate_backend($1)", [pid]);
  }

  /** Close the session (releasing what it holds) and every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.dispatcher.broadcast({ kind: "closed", detail: "" });
    this.closed = true;
    for (const timer of this.renewals.values()) clearTimeout(timer);
    await this.session.close();
    await this.pool.end();
  }
}
