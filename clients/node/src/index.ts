export * from "./errors.js";
export { Client, Dispatcher, parsePayload } from "./client.js";
export type {
  AcquireOptions, ClientOptions, ConcurrencyLimit, EventKind, Grant, Holder, Mode, Waiter, WaiterEvent,
} from "./client.js";
