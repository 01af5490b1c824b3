// The Node client under faults, against a PostgreSQL server of this file's own (test/server.py),
// which it restarts and puts PgBouncer in front of: a transaction pooler refused at once
// without a session DSN and working with one; an answer lost after the server committed, and a
// connection killed mid-call or mid-wait (pg_terminate_backend), settled by request id so that
// nothing is held twice nor left behind; maxRetries bounding the start-overs; a waiter riding
// through `pg_ctl restart -m fast`, its holder's release succeeding afterwards.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, ConcurrencySlotAcquisitionError, ConfigurationError } from "../src/index.js";
import { LossyProxy, OwnServer, lockLimit, lockWaiters, sql, until } from "./helpers.js";

let server: OwnServer;
let dsn = "";
let admin: Client;
const clients: Client[] = [];
const client = (opts = {}, at = dsn): Client => {
  const c = new Client(at, opts);
  clients.push(c);
  return c;
};

before(async () => {
  server = await OwnServer.start();
  dsn = server.dsn;
  admin = client();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server.stop();
});

async function nothingHeldOrQueued(name: string): Promise<void> {
  assert.deepEqual(await admin.holders(name), [], `left held on ${name}`);
  assert.deepEqual(await admin.queue(name), [], `left queued on ${name}`);
}

/** A block that holds `name` until `release()` is called; resolves `entered` once inside. */
function holding(c: Client, name: string, opts = {}): { entered: Promise<void>; release: () => void; done: Promise<unknown> } {
  let release!: () => void;
  let entered!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const inside = new Promise<void>((r) => (entered = r));
  const done = c.concurrency(name, { timeoutSeconds: 30, ...opts }, async () => {
    entered();
    await held;
  });
  return { entered: inside, release, done };
}

test("a transaction pooler without a session DSN: ConfigurationError at once, naming the fix", async (t) => {
  // One server connection for all, as tests/faults/test_pgbouncer.py: every statement meets there.
  const through = await server.bouncer("transaction", { default_pool_size: "1" });
  if (through === null) return t.skip("pgbouncer is not installed (scripts/bootstrap.sh)");
  await admin.createLimit("f-pooler", 1);
  let entered = 0;
  for (const c of [client({}, through), client({}, through)]) {
    const err = await c.concurrency("f-pooler", { timeoutSeconds: 30 }, () => entered++).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof ConfigurationError, `got ${String(err)}`);
    assert.match(err.message, /sessionDsn/);
    assert.match(err.message, /PGGCL_SESSION_DSN/);
    // Every later call is refused at once with the same error.
    await assert.rejects(c.readLimit("f-pooler"), ConfigurationError);
  }
  assert.equal(entered, 0, "no block ran");
  await nothingHeldOrQueued("f-pooler");
});

test("a transaction pooler with a direct session DSN works: hand-off by notification, never over the limit", async (t) => {
  const through = await server.bouncer("transaction", { default_pool_size: "2" });
  if (through === null) return t.skip("pgbouncer is not installed (scripts/bootstrap.sh)");
  await admin.createLimit("f-pooled", 2);
  let running = 0;
  let peak = 0;
  await Promise.all(Array.from({ length: 4 }, async () => {
    const c = client({ sessionDsn: dsn }, through);
    for (let i = 0; i < 3; i++) {
      await c.concurrency("f-pooled", { timeoutSeconds: 30 }, async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 30));
        running--;
      });
    }
  }));
  assert.equal(peak, 2);
  await nothingHeldOrQueued("f-pooled");
});

test("an answer lost after the server committed is settled by request id: granted once, released once", async () => {
  const proxy = await new LossyProxy(Number(new URL(dsn).port)).start();
  try {
    await admin.createLimit("f-lost", 1);
    const c = client({ sessionDsn: dsn, poolSize: 1 }, proxy.through(dsn));
    await c.readLimit("f-lost");  // the pool's connection is made
    // The take commits, its answer is lost: the client cancels by request id (the engine
    // answers granted), releases it, and starts over.
    proxy.loseNextAnswer();
    const seen = await c.concurrency("f-lost", { timeoutSeconds: 30 }, async (grant) => {
      const held = await admin.holders("f-lost");
      return { held: held.map((h) => h.leaseId), mine: grant.leaseId };
    });
    assert.equal(proxy.lost, 1);
    assert.equal(c.stats.startOvers, 1);
    assert.deepEqual(seen.held, [seen.mine], "only the second attempt's lease was held");
    await nothingHeldOrQueued("f-lost");

    // Queued, its answer lost: cancelled by request id and queued again, once.
    await admin.createLimit("f-lost-b", 1);
    const holder = holding(admin, "f-lost");
    await holder.entered;
    proxy.loseNextAnswer();  // the multi-limit request goes to pggcl.acquire, which queues it
    const waiting = c.concurrency(["f-lost", "f-lost-b"], { timeoutSeconds: 30 }, async () => (await admin.holders("f-lost")).length);
    await until(() => c.stats.startOvers === 2, "the lost answer was settled");
    await until(async () => (await admin.queue("f-lost")).length === 1, "queued again");
    assert.equal((await admin.queue("f-lost")).length, 1, "queued once, not twice");
    holder.release();
    await holder.done;
    assert.equal(await waiting, 1, "one lease on f-lost while the block ran");
    await nothingHeldOrQueued("f-lost");

    // maxRetries bounds the start-overs: the settled attempt is the last one.
    proxy.loseNextAnswer();
    await assert.rejects(c.concurrency("f-lost", { maxRetries: 0, timeoutSeconds: 30 }, () => 0), ConcurrencySlotAcquisitionError);
    assert.equal(c.stats.startOvers, 3);
    await nothingHeldOrQueued("f-lost");
  } finally {
    await proxy.stop().catch(() => {});
  }
});

test("a release that cannot reach the database within retrySeconds is done once it answers", async () => {
  const proxy = await new LossyProxy(Number(new URL(dsn).port)).start();
  try {
    await admin.createLimit("f-later", 1);
    const c = client({ sessionDsn: dsn, retrySeconds: 0.3 }, proxy.through(dsn));
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on("warning", onWarning);
    await c.concurrency("f-later", { timeoutSeconds: 10 }, () => proxy.goDown());
    await until(() => warnings.some((w) => /released as soon as the database answers/.test(w)), "the client warned");
    process.off("warning", onWarning);
    assert.equal((await admin.holders("f-later")).length, 1, "still held while unreachable");
    proxy.up();
    await until(async () => (await admin.holders("f-later")).length === 0, "the release was done in the background");
    await nothingHeldOrQueued("f-later");
  } finally {
    await proxy.stop().catch(() => {});
  }
});

test("a pool connection killed mid-call (pg_terminate_backend): settled, started over, held once", async () => {
  await admin.createLimit("f-killed-call", 1);
  const c = client({ poolSize: 2 });
  await c.sessionIdForTests();
  const lock = await lockLimit(dsn, "f-killed-call");
  const done = c.concurrency("f-killed-call", { timeoutSeconds: 30 }, async (grant) =>
    [(await admin.holders("f-killed-call")).map((h) => h.leaseId), grant.leaseId]);
  let pids: number[] = [];
  await until(async () => (pids = await lockWaiters(dsn, "pggcl.take")).length === 1, "the take waits for the lock");
  await sql(dsn, "SELECT pg_terminate_backend($1)", [pids[0]]);
  await until(() => c.stats.startOvers === 1, "the lost call was settled");
  await lock.commit();
  const [held, mine] = await done as [string[], string];
  assert.deepEqual(held, [mine], "held once, by the attempt that was answered");
  await nothingHeldOrQueued("f-killed-call");
});

test("a waiter's connections killed mid-wait (pg_terminate_backend): it resumes, is granted once, nothing is left", async () => {
  await admin.createLimit("f-killed-wait", 1);
  const holder = holding(admin, "f-killed-wait");
  await holder.entered;
  const c = client({ graceSeconds: 5, applicationName: "f-killed-wait" });
  const sid = await c.sessionIdForTests();
  const waiting = c.concurrency("f-killed-wait", { timeoutSeconds: 30 }, async (grant) =>
    [(await admin.holders("f-killed-wait")).map((h) => h.leaseId), grant.leaseId]);
  await until(async () => (await admin.queue("f-killed-wait")).length === 1, "the waiter is queued");
  // Every connection of the waiting client: its session connection and its pool's.
  const backends = await sql<{ pid: number }>(dsn,
    "SELECT pid FROM pg_stat_activity WHERE application_name = 'f-killed-wait'");
  assert.ok(backends.some((b) => b.pid === c.sessionBackendPidForTests), "the session connection is among them");
  assert.ok(backends.length >= 2, "and the pool's");
  await sql(dsn, "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [backends.map((b) => b.pid)]);
  await until(() => c.stats.connects >= 2, "the session connection is back");
  assert.equal(await c.sessionIdForTests(), sid, "the session was resumed");
  assert.equal((await admin.queue("f-killed-wait")).length, 1, "still queued, once");
  holder.release();
  await holder.done;
  const [held, mine] = await waiting as [string[], string];
  assert.deepEqual(held, [mine], "held once");
  await nothingHeldOrQueued("f-killed-wait");
});

test("a waiter rides through `pg_ctl restart -m fast`; its holder's release succeeds afterwards", async () => {
  await admin.createLimit("f-restart", 1);
  const a = client({ graceSeconds: 5 });
  const b = client({ graceSeconds: 5 });
  const lease = await a.acquire("f-restart", "concurrency", { timeoutSeconds: 10 });
  assert.ok(lease !== null);
  const sid = await a.sessionIdForTests();
  const waiting = b.concurrency("f-restart", { timeoutSeconds: 60 }, async (grant) =>
    [(await admin.holders("f-restart")).map((h) => h.leaseId), grant.leaseId]);
  await until(async () => (await admin.queue("f-restart")).length === 1, "the waiter is queued");
  await server.restart();
  // Both sessions come back (resumed within the grace, counted from when the server saw them gone).
  await until(() => a.stats.connects >= 2 && b.stats.connects >= 2, "both session connections are back");
  assert.equal(await a.sessionIdForTests(), sid);
  assert.equal(await a.release(lease), true, "the holder's lease survived the restart");
  const [held, mine] = await waiting as [string[], string];
  assert.deepEqual(held, [mine], "the waiter was granted, once");
  assert.equal(a.stats.sessionsLost + b.stats.sessionsLost, 0, "no session was lost");
  await nothingHeldOrQueued("f-restart");
});
