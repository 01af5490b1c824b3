export * from "./errors.js";
export { Client, HISTOGRAM_BOUNDS } from "./client.js";
export { Dispatcher, parsePayload } from "./dispatch.js";
export { checkCallApart, checkFresh, checkKept } from "./session.js";
export type { AcquireOptions, ClientOptions, ConcurrencyLimit, Grant, Holder, LimitTemplate, Mode, Waiter } from "./client.js";
export type { EventKind, WaiterEvent } from "./dispatch.js";
export type { Stats } from "./session.js";
