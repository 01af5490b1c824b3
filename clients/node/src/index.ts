export * from "./errors.js";
export { Client, Dispatcher, parsePayload } from "./client.js";
export type {
  AcquireOptions, ClientOptions, ConcurrencyLimit, EventKind, Holder, Mode, Waiter, WaiterEvent,
} from "./client.js";
