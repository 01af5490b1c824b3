import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { after, before, test } from "node:test";

import pg from "pg";

import {
  AcquireConcurrencySlotTimeoutError, Client, ConcurrencySlotAcquisitionError, ConfigurationError,
  DatabaseUnavailableError, Dispatcher, HISTOGRAM_BOUNDS, LimitExistsError, LimitNotFoundError, PermissionDeniedError,
  PggclError, PoolTimeoutError, SchemaNotInstalledError, ValidationError, isUnavailable, parsePayload,
  translateError,
} from "../src/index.js";
import { Lines, exited, here, lockLimit, lockWaiters, python, sleep, sql, stopServer, testDsn, until } from "./helpers.js";

let dsn = "";
let admin: Client;
const clients: Client[] = [];
const client = (opts = {}): Client => {
  const c = new Client(dsn, opts);
  clients.push(c);
  return c;
};

before(async () => {
  dsn = await testDsn();
  admin = client();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  stopServer();
});

test("payloads parse; anything else is ignored", () => {
  assert.deepEqual(parsePayload("g:12"), ["12", { kind: "g", detail: "" }]);
  assert.deepEqual(parsePayload("e:9007199254740993:cannot occupy 2: x"), ["9007199254740993", { kind: "e", detail: "cannot occupy 2: x" }]);
  assert.equal(parsePayload("p"), null);
  assert.equal(parsePayload("x:1"), null);
  assert.equal(parsePayload("g:abc"), null);
});

test("an event that comes before its waiter registers is kept for it", async () => {
  const d = new Dispatcher();
  d.deliver("5", { kind: "g", detail: "" });
  const got: string[] = [];
  d.register("5", { push: (e: { kind: string }) => got.push(e.kind) } as never, d.epoch);
  assert.deepEqual(got, ["g"]);
  d.unregister("5");
  d.deliver("5", { kind: "g", detail: "" });  // late duplicate: dropped
  d.register("5", { push: (e: { kind: string }) => got.push(e.kind) } as never, d.epoch);
  assert.deepEqual(got, ["g"]);
});

// Real errors of a real server, each through translateError: the classes of the Python
// clients' translate_error (pggcl/core/failures.py), SQLSTATE by SQLSTATE.
test("server errors map to the classes the Python clients map them to", async () => {
  const conn = new pg.Client({ connectionString: dsn });
  await conn.connect();
  const victim = new pg.Client({ connectionString: dsn });
  victim.on("error", () => {});
  await victim.connect();
  try {
    const failure = async (sql: string, on: pg.Client = conn): Promise<unknown> => {
      const err = await on.query(sql).then(() => null, (e: unknown) => e);
      assert.ok(err !== null, `${sql} did not fail`);
      return translateError(err);
    };
    const cases: Array<[string, string, new (...a: never[]) => PggclError]> = [
      // An older schema (a view without the column a newer client reads): upgrade.
      ["SELECT no_such_column FROM pggcl.limits", "42703", SchemaNotInstalledError],
      ["SELECT * FROM pggcl.no_such_view", "42P01", SchemaNotInstalledError],
      ["SELECT pggcl.no_such_function()", "42883", SchemaNotInstalledError],
      ["SELECT pggcl_no_such_schema.f()", "3F000", SchemaNotInstalledError],
      ["SELECT 3000000000::integer", "22003", ValidationError],
      ["EXECUTE pggcl_no_such_statement", "26000", ConfigurationError],
      ["SELECT 'not a uuid'::uuid", "22P02", PggclError],
      ["SET ROLE pggcl_user; SELECT * FROM pggcl.create_limit('n-denied', 1)", "42501", PermissionDeniedError],
    ];
    for (const [sql, sqlstate, cls] of cases) {
      const e = await failure(sql);
      await conn.query("RESET ROLE");
      assert.ok(e instanceof cls, `${sql}: ${String(e)} is not a ${cls.name}`);
      assert.equal((e as PggclError).sqlstate, sqlstate, sql);
      if (cls === PggclError) assert.equal((e as PggclError).constructor, PggclError, `${sql}: a plain PggclError`);
    }
    await conn.query("PREPARE pggcl_twice AS SELECT 1");
    const twice = await failure("PREPARE pggcl_twice AS SELECT 1");
    assert.ok(twice instanceof ConfigurationError && twice.sqlstate === "42P05", String(twice));
    // 57014, query_canceled (a statement_timeout, a cancel request): class 57 is "unavailable",
    // as in Python (retried as such), not a plain PggclError.
    await conn.query("SET statement_timeout = 50");
    const cancelled = await failure("SELECT pg_sleep(5)");
    await conn.query("RESET statement_timeout");
    assert.ok(cancelled instanceof DatabaseUnavailableError, String(cancelled));
    assert.equal(cancelled.sqlstate, "57014");
    assert.ok(isUnavailable(cancelled));
    // 57P01: the server ended the connection (admin shutdown).
    const pid = (victim as unknown as { processID: number }).processID;
    await conn.query("SELECT pg_terminate_backend($1)", [pid]);
    const gone = await failure("SELECT 1", victim);
    assert.ok(gone instanceof DatabaseUnavailableError, String(gone));
  } finally {
    await conn.end();
    await victim.end().catch(() => {});
  }
});

test("the session connection outlives the server's idle_session_timeout: keepalives, no reconnect", async () => {
  // The server's timeout, 3 s, set by the connection's startup options (not by the client),
  // on every connection of this client.
  const url = new URL(dsn);
  url.searchParams.set("options", "-c idle_session_timeout=3000");
  const idleDsn = url.toString();
  assert.deepEqual(await sql(idleDsn, "SHOW idle_session_timeout"), [{ idle_session_timeout: "3s" }]);
  await admin.createLimit("n-idle", 1);
  const c = new Client(idleDsn, { heartbeatSeconds: 30 });
  clients.push(c);
  const out = await c.concurrency("n-idle", {}, async (grant) => {
    const sid = await c.sessionIdForTests();
    const pid = c.sessionBackendPidForTests;
    // Idle for longer than the timeout: the condition under test, not a synchronisation.
    await sleep(4500);
    assert.equal(c.stats.connects, 1, "the session connection was never made again");
    assert.equal(c.stats.sessionsOpened, 1);
    assert.equal(c.sessionBackendPidForTests, pid, "the same server process");
    assert.ok(c.stats.keepalives >= 1, `keepalives ${c.stats.keepalives}`);
    const held = await admin.holders("n-idle");
    assert.deepEqual(held.map((h) => [h.leaseId, h.sessionId]), [[grant.leaseId, sid]], "the lease is still the session's");
    return "held";
  });
  assert.equal(out, "held");
  assert.equal((await admin.holders("n-idle")).length, 0);
});

test("idleSessionTimeoutSeconds sets the session connection's timeout, and the keepalive follows it", async () => {
  for (const bad of [0, 2.9, 86_401, Number.NaN]) {
    assert.throws(() => new Client(dsn, { idleSessionTimeoutSeconds: bad }),
      (e: unknown) => e instanceof ValidationError && e.field === "idle_session_timeout_seconds", String(bad));
  }
  const c = new Client(dsn, { idleSessionTimeoutSeconds: 3 });
  clients.push(c);
  await c.sessionIdForTests();
  const pid = c.sessionBackendPidForTests;
  await until(() => c.stats.keepalives >= 1, "a keepalive a third of 3 s after connecting");
  assert.equal(c.sessionBackendPidForTests, pid);
  assert.equal(c.stats.connects, 1);
});

test("pg_stat_activity shows the session connection's last check, not the LISTEN of its secret channel", async () => {
  const c = client();
  await c.sessionIdForTests();
  const rows = await sql<{ query: string }>(dsn, "SELECT query FROM pg_stat_activity WHERE pid = $1", [c.sessionBackendPidForTests]);
  assert.equal(rows.length, 1);
  assert.doesNotMatch(rows[0]!.query, /LISTEN|pggcl_\d+_[0-9a-f]{32}/);
});

test("managing limits, with the Python clients' error classes", async () => {
  const made = await admin.createLimit("n-manage", 3, 0.5);
  assert.equal(made.limit, 3);
  assert.equal(made.slotDecayPerSecond, 0.5);
  await assert.rejects(admin.createLimit("n-manage", 3), LimitExistsError);
  await assert.rejects(admin.createLimit("n-bad", -1), (e: unknown) => e instanceof ValidationError && e.field === "limit" && e.sqlstate === "GC003");
  await assert.rejects(admin.readLimit("n-missing"), LimitNotFoundError);
  await assert.rejects(admin.updateLimit("n-missing", { limit: 1 }), LimitNotFoundError);
  const changed = await admin.updateLimit("n-manage", { limit: 5, active: false });
  assert.equal(changed.limit, 5);
  assert.equal(changed.active, false);
  assert.ok((await admin.listLimits()).some((l) => l.name === "n-manage"));
  assert.equal(await admin.deleteLimit("n-manage"), true);
  assert.equal(await admin.deleteLimit("n-manage"), false);
});

test("grant, queue, hand-off; timeout leaves nothing queued", async () => {
  await admin.createLimit("n-hand", 1);
  const a = client();
  const b = client();
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const holding = a.concurrency("n-hand", {}, () => held);
  await sleep(200);
  assert.equal((await admin.holders("n-hand")).length, 1);
  await assert.rejects(b.concurrency("n-hand", { timeoutSeconds: 0.3 }, () => 0), AcquireConcurrencySlotTimeoutError);
  assert.equal((await admin.queue("n-hand")).length, 0);
  const waiting = b.concurrency("n-hand", { timeoutSeconds: 10 }, () => "ran");
  await sleep(200);
  assert.equal((await admin.queue("n-hand")).length, 1);
  release();
  await holding;
  assert.equal(await waiting, "ran");
  assert.equal((await admin.holders("n-hand")).length, 0);
});

test("a limit carries the engine's counters: a grant, a queue, a refusal, a timeout, a rejection", async () => {
  const made = await admin.createLimit("n-counts", 1);
  const counters = (l: typeof made): number[] => [
    l.grants, l.enqueued, l.denied, l.gaveUp, l.rejected, l.reclaimedSlots, l.waitSecondsCount, l.holdSecondsCount];
  assert.deepEqual(counters(made), [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(made.waitSecondsBuckets, HISTOGRAM_BOUNDS.map(() => 0));
  assert.deepEqual([made.waitSecondsSum, made.holdSecondsSum, made.template, made.customized], [0, 0, null, false]);
  const b = client();
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const holding = admin.concurrency("n-counts", {}, () => held);  // granted at once
  await until(async () => (await admin.holders("n-counts")).length === 1, "the grant");
  // Refused without waiting; queued and timed out; queued and granted when the holder ends.
  await assert.rejects(b.concurrency("n-counts", { timeoutSeconds: 0 }, () => 0), AcquireConcurrencySlotTimeoutError);
  await assert.rejects(b.concurrency("n-counts", { timeoutSeconds: 0.2 }, () => 0), AcquireConcurrencySlotTimeoutError);
  const waiting = b.concurrency("n-counts", { timeoutSeconds: 30 }, () => "ran");
  await until(async () => (await admin.queue("n-counts")).length === 1, "the waiter");
  release();
  await holding;
  assert.equal(await waiting, "ran");
  // Queued, then the limit is lowered below it: rejected.
  let releaseAgain!: () => void;
  const heldAgain = new Promise<void>((r) => (releaseAgain = r));
  const holdingAgain = admin.concurrency("n-counts", {}, () => heldAgain);
  await until(async () => (await admin.holders("n-counts")).length === 1, "the second grant");
  // Its rejection is handled from the start: it comes while updateLimit is being awaited.
  const doomed = assert.rejects(b.concurrency("n-counts", {}, () => 0), ConcurrencySlotAcquisitionError);
  await until(async () => (await admin.queue("n-counts")).length === 1, "the doomed waiter");
  await admin.updateLimit("n-counts", { limit: 0 });
  await doomed;
  releaseAgain();
  await holdingAgain;

  const l = await admin.readLimit("n-counts");
  // grants, enqueued, denied, gave up, rejected, reclaimed, waits counted, holds ended
  assert.deepEqual(counters(l), [3, 3, 1, 1, 1, 0, 3, 3]);
  for (const value of [...counters(l), l.waitSecondsSum, l.holdSecondsSum, ...l.waitSecondsBuckets, ...l.holdSecondsBuckets]) {
    assert.equal(typeof value, "number");
  }
  assert.ok(l.waitSecondsSum > 0, "the queued grant waited");
  assert.ok(l.holdSecondsSum > 0, "the leases were held");
  for (const buckets of [l.waitSecondsBuckets, l.holdSecondsBuckets]) {
    assert.equal(buckets.length, HISTOGRAM_BOUNDS.length);
    assert.ok(buckets.every((v, i) => i === 0 || v >= buckets[i - 1]!), `cumulative: ${buckets}`);
    assert.equal(buckets.at(-1), 3);
  }
  assert.ok(l.waitSecondsBuckets[0]! >= 2, "two grants at once waited 0 s");
  // listLimits and updateLimit return the same model.
  const listed = (await admin.listLimits()).find((x) => x.name === "n-counts")!;
  assert.deepEqual(counters(listed), counters(l));
  assert.deepEqual(listed.holdSecondsBuckets, l.holdSecondsBuckets);
  assert.deepEqual(counters(await admin.updateLimit("n-counts", { limit: 1 })), counters(l));
});

test("a limit made from a template names it, and is customized once changed by itself", async () => {
  await admin.createLimit("n-tpl-*", 2);
  await admin.concurrency("n-tpl-a", {}, () => 0);
  const made = await admin.readLimit("n-tpl-a");
  assert.deepEqual([made.limit, made.template, made.customized, made.grants], [2, "n-tpl-*", false, 1]);
  const changed = await admin.updateLimit("n-tpl-a", { limit: 3 });
  assert.deepEqual([changed.template, changed.customized], ["n-tpl-*", true]);
  assert.equal((await admin.readLimit("n-tpl-a")).customized, true);
});

test("templates: created with an idle time, listed, changed with their instances", async () => {
  const made = await admin.createLimit("n-tenant:*", 2, 0, true, 600);
  assert.deepEqual([made.name, made.limit, made.template], ["n-tenant:*", 2, null]);
  await admin.concurrency("n-tenant:acme", {}, () => 0);  // made on first use, active
  const [template] = (await admin.listTemplates()).filter((t) => t.name === "n-tenant:*");
  assert.deepEqual([template!.limit, template!.idleSeconds, template!.instances], [2, 600, 1]);
  await admin.updateLimit("n-tenant:*", { limit: 4, idleSeconds: 60 });
  assert.equal((await admin.readLimit("n-tenant:acme")).limit, 4);
  const [changed] = (await admin.listTemplates()).filter((t) => t.name === "n-tenant:*");
  assert.deepEqual([changed!.limit, changed!.idleSeconds], [4, 60]);
  await assert.rejects(admin.createLimit("n-plain", 1, 0, true, 5), ValidationError);
});

test("an aborted wait leaves nothing queued and rejects with the signal's reason", async () => {
  await admin.createLimit("n-abort", 1);
  await admin.concurrency("n-abort", {}, async () => {
    const controller = new AbortController();
    const waiting = client().concurrency("n-abort", { signal: controller.signal }, () => "ran");
    for (let i = 0; i < 100 && (await admin.queue("n-abort")).length === 0; i++) await sleep(20);
    assert.equal((await admin.queue("n-abort")).length, 1);
    controller.abort(new Error("stop"));
    await assert.rejects(waiting, /stop/);
    assert.equal((await admin.queue("n-abort")).length, 0);
  });
  assert.equal((await admin.holders("n-abort")).length, 0);
});

test("never more than the limit: 8 clients on a limit of 2", async () => {
  await admin.createLimit("n-eight", 2);
  let running = 0;
  let peak = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    const c = client();
    for (let i = 0; i < 3; i++) {
      await c.concurrency("n-eight", { timeoutSeconds: 30 }, async () => {
        running++;
        peak = Math.max(peak, running);
        await sleep(20);
        running--;
      });
    }
  }));
  assert.equal(peak, 2);
});

test("a request that can never be granted raises ConcurrencySlotAcquisitionError", async () => {
  await admin.createLimit("n-never", 1);
  await assert.rejects(admin.concurrency("n-never", { occupy: 2 }, () => 0), ConcurrencySlotAcquisitionError);
  await assert.rejects(admin.concurrency("n-never-missing", { strict: true }, () => 0), ConcurrencySlotAcquisitionError);
  await assert.rejects(admin.rateLimit("n-never"), ConcurrencySlotAcquisitionError);  // no decay
});

test("a rate limit of 5 per second", async () => {
  await admin.createLimit("n-rate", 1, 5);
  const c = client();
  const start = performance.now();
  for (let i = 0; i < 6; i++) await c.rateLimit("n-rate", { timeoutSeconds: 10 });
  const took = (performance.now() - start) / 1000;
  assert.ok(took >= 0.95 && took < 2, `6 calls took ${took}s`);
});

test("a dropped session connection is resumed: the lease survives and a waiter is served", async () => {
  await admin.createLimit("n-resume", 1);
  const a = client({ graceSeconds: 5 });
  const b = client();
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const holding = a.concurrency("n-resume", {}, () => held);
  await sleep(200);
  const sid = await a.sessionIdForTests();
  const waiting = b.concurrency("n-resume", { timeoutSeconds: 15 }, () => "served");
  await sleep(200);
  await b.dropSessionConnectionForTests();
  await a.dropSessionConnectionForTests();
  await sleep(500);
  assert.equal(await a.sessionIdForTests(), sid);
  assert.equal((await admin.holders("n-resume"))[0]?.sessionId, sid);
  release();
  await holding;
  assert.equal(await waiting, "served");
});

test("cross-language: a Python holder and a Node waiter", async () => {
  await admin.createLimit("n-py-holds", 1);
  const code = [
    "import sys, time, pggcl",
    "with pggcl.Client(sys.argv[1]) as c:",
    "    with c.concurrency('n-py-holds', timeout_seconds=10):",
    "        print('held', flush=True); time.sleep(2.0)",
    "    print('released', flush=True)",
  ].join("\n");
  const child = spawn(python, ["-c", code, dsn], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = new Lines(child);
  assert.equal(await lines.next(), "held");
  const start = performance.now();
  await client().concurrency("n-py-holds", { timeoutSeconds: 10 }, () => 0);
  assert.ok(performance.now() - start > 500);
  assert.equal(await exited(child), 0);
});

test("cross-language: a Node holder and a Python waiter", async () => {
  await admin.createLimit("n-node-holds", 1);
  const holder = spawn(process.execPath, [resolve(here, "holder.js"), dsn, "n-node-holds", "2.0", "5"], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = new Lines(holder);
  assert.equal(await lines.next(), "held");
  const code = [
    "import sys, time, pggcl",
    "with pggcl.Client(sys.argv[1]) as c:",
    "    t = time.monotonic()",
    "    with c.concurrency('n-node-holds', timeout_seconds=10):",
    "        print(round(time.monotonic() - t, 2), flush=True)",
  ].join("\n");
  const waiter = spawn(python, ["-c", code, dsn], { stdio: ["ignore", "pipe", "inherit"] });
  const waited = Number(await new Lines(waiter).next());
  assert.ok(waited > 0.5, `the Python waiter waited ${waited}s`);
  assert.equal(await exited(waiter), 0);
  assert.equal(await exited(holder), 0);
});

test("a killed Node holder's slot comes back", async () => {
  await admin.createLimit("n-killed", 1);
  const holder = spawn(process.execPath, [resolve(here, "holder.js"), dsn, "n-killed", "60", "0.5"], { stdio: ["ignore", "pipe", "inherit"] });
  assert.equal(await new Lines(holder).next(), "held");
  holder.kill("SIGKILL");
  await exited(holder);
  const start = performance.now();
  await client({ heartbeatSeconds: 0.5 }).concurrency("n-killed", { timeoutSeconds: 10 }, () => 0);
  const took = (performance.now() - start) / 1000;
  assert.ok(took < 5, `took ${took}s`);
});

test("an uncontended acquire is one round trip (pggcl.take); after a queued request, acquire alone", async () => {
  await admin.createLimit("n-one", 1);
  const c = client();
  await c.sessionIdForTests();  // the session connection is up: no statement of its own below
  await c.concurrency("n-one", {}, () => 0);  // the pool's connection is made
  const before = c.stats.calls;
  const takes = c.stats.takes;
  await c.concurrency("n-one", {}, () => {
    assert.equal(c.stats.calls, before + 1, "the acquire cost one statement");
  });
  assert.equal(c.stats.calls, before + 2, "and the release one more");
  assert.equal(c.stats.takes, takes + 1);
  // Contended: the first request tries take, then queues through acquire; the next one on
  // that limit goes straight to acquire (one statement to queue, not two).
  for (const expected of [2, 1]) {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const holding = admin.concurrency("n-one", {}, () => held);
    await until(async () => (await admin.holders("n-one")).length === 1, "the admin holds n-one");
    const calls = c.stats.calls;
    const waiting = c.concurrency("n-one", { timeoutSeconds: 20 }, () => 0);
    await until(async () => (await admin.queue("n-one")).length === 1, "the client is queued");
    assert.equal(c.stats.calls - calls, expected, `statements to queue (expected ${expected})`);
    release();
    await holding;
    await waiting;
  }
});

test("an exhausted pool: PoolTimeoutError after poolTimeout, not an unbounded wait", async () => {
  await admin.createLimit("n-busy", 1);
  const c = client({ poolSize: 1, poolTimeout: 0.3 });
  await c.sessionIdForTests();
  const lock = await lockLimit(dsn, "n-busy");
  // The one pool connection is stuck in the acquire, behind the lock.
  const stuck = c.concurrency("n-busy", { timeoutSeconds: 30 }, () => "ran");
  await until(async () => (await lockWaiters(dsn, "pggcl.take")).length === 1, "the take waits for the lock");
  const err = await c.readLimit("n-busy").then(() => null, (e: unknown) => e);
  assert.ok(err instanceof PoolTimeoutError, `got ${String(err)}`);
  assert.equal(err.name, "PoolTimeoutError");
  assert.equal(err.sqlstate, null);
  assert.equal(err.field, null);
  assert.match(err.message, /poolSize or poolTimeout/);
  assert.equal(c.poolWaitingForTests, 0, "the timed-out caller left the line");
  await lock.commit();
  assert.equal(await stuck, "ran");
  assert.equal((await c.readLimit("n-busy")).limit, 1, "the pool works again");
  assert.equal((await admin.holders("n-busy")).length, 0);
});

test("maxRetries 0: slots not free at once raise ConcurrencySlotAcquisitionError, nothing queued", async () => {
  await admin.createLimit("n-noqueue", 1);
  await admin.concurrency("n-noqueue", {}, async () => {
    await assert.rejects(client().concurrency("n-noqueue", { maxRetries: 0 }, () => 0), ConcurrencySlotAcquisitionError);
    assert.equal((await admin.queue("n-noqueue")).length, 0);
  });
  await assert.rejects(client().concurrency("n-noqueue", { maxRetries: -1 }, () => 0), ValidationError);
});
