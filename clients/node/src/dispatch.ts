// Notifications: the payload grammar of docs/protocol.md section 4, and the routing of events
// to waiters by id, keeping those that come before their acquire's reply.

/** What a waiter is told: granted, re-check, rejected (with why), session lost, client closed. */
export type EventKind = "g" | "r" | "e" | "lost" | "closed" | "abort" | "misconfigured";
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

export class Mailbox {
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
