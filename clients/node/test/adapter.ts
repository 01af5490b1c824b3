// The conformance adapter of the Node client (protocol: tests/conformance/README.md):
// JSON commands on stdin, JSON events on stdout. Arguments: DSN GRACE_SECONDS HEARTBEAT_SECONDS.
import { createInterface } from "node:readline";

import { AcquireConcurrencySlotTimeoutError, Client, PggclError } from "../src/index.js";

interface Command {
  cmd: "acquire" | "release" | "cancel" | "quit";
  tag: string;
  names: string[];
  occupy?: number;
  mode?: "concurrency" | "rate_limit";
  timeout?: number | null;
  max_retries?: number | null;
}

const [dsn, grace, heartbeat] = process.argv.slice(2) as [string, string, string];
const client = new Client(dsn, { graceSeconds: Number(grace), heartbeatSeconds: Number(heartbeat) });
const emit = (event: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(event) + "\n");
};
const releases = new Map<string, () => void>();
// cancel: the acquire's wait is given up through its AbortSignal, as Node code would.
const cancels = new Map<string, AbortController>();
class Cancelled extends Error {}
const released = new Map<string, Promise<void>>();
const releasing = (tag: string): Promise<void> => {
  let p = released.get(tag);
  if (p === undefined) {
    p = new Promise<void>((r) => releases.set(tag, r));
    released.set(tag, p);
  }
  return p;
};

async function acquire(cmd: Command): Promise<void> {
  const started = performance.now();
  const elapsed = (): number => (performance.now() - started) / 1000;
  const controller = new AbortController();
  cancels.set(cmd.tag, controller);
  const opts = {
    occupy: cmd.occupy ?? 1, timeoutSeconds: cmd.timeout ?? null, maxRetries: cmd.max_retries ?? null, signal: controller.signal,
  };
  try {
    if (cmd.mode === "rate_limit") {
      await client.rateLimit(cmd.names, opts);
      emit({ event: "granted", tag: cmd.tag, lease: null, elapsed: elapsed() });
      return;
    }
    const done = releasing(cmd.tag);
    await client.concurrency(cmd.names, opts, async (grant) => {
      emit({ event: "granted", tag: cmd.tag, lease: grant.leaseId, elapsed: elapsed() });
      await done;
    }).then(() => emit({ event: "released", tag: cmd.tag }));
  } catch (err) {
    if (err instanceof Cancelled) emit({ event: "cancelled", tag: cmd.tag });
    else if (err instanceof AcquireConcurrencySlotTimeoutError) emit({ event: "timeout", tag: cmd.tag, elapsed: elapsed() });
    else if (err instanceof PggclError) emit({ event: "error", tag: cmd.tag, class: err.name, sqlstate: err.sqlstate });
    else emit({ event: "error", tag: cmd.tag, class: String(err) });
  }
}

emit({ event: "ready" });
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as Command;
  if (cmd.cmd === "acquire") void acquire(cmd);
  else if (cmd.cmd === "release") {
    void releasing(cmd.tag);
    releases.get(cmd.tag)?.();
  } else if (cmd.cmd === "cancel") cancels.get(cmd.tag)?.abort(new Cancelled(`cancelled ${cmd.tag}`));
  else if (cmd.cmd === "quit") break;
}
await client.close();
process.exit(0);
