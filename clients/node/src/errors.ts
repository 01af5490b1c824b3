// Errors raised by the pggcl Node client: the same classes as the Python clients (pggcl.errors).

export class PggclError extends Error {
  /** The SQLSTATE of the database error this is, or null when it did not come from one. */
  sqlstate: string | null;
  /** The parameter an invalid-argument error is about (the error's COLUMN field), or null. */
  field: string | null;

  constructor(message: string, opts: { sqlstate?: string | null; field?: string | null; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.sqlstate = opts.sqlstate ?? null;
    this.field = opts.field ?? null;
  }
}

export class ValidationError extends PggclError {}
export class LimitNotFoundError extends PggclError {}
export class LimitExistsError extends PggclError {}
export class ConcurrencySlotAcquisitionError extends PggclError {}
export class AcquireConcurrencySlotTimeoutError extends PggclError {}
export class SessionLostError extends PggclError {}
export class SchemaNotInstalledError extends PggclError {}
export class PermissionDeniedError extends PggclError {}
export class DatabaseUnavailableError extends PggclError {}
/** Every connection of the client's pool stayed busy for `poolTimeout` seconds. */
export class PoolTimeoutError extends PggclError {}
export class ClientClosedError extends PggclError {}
export class ConfigurationError extends PggclError {}

const ENGINE: Record<string, new (m: string, o: { sqlstate?: string | null; field?: string | null; cause?: unknown }) => PggclError> = {
  GC001: LimitNotFoundError,
  GC002: LimitExistsError,
  GC003: ValidationError,
  GC004: ConcurrencySlotAcquisitionError,
  GC005: ConcurrencySlotAcquisitionError,
  GC006: ConcurrencySlotAcquisitionError,
  GC007: SessionLostError,
  GC008: SessionLostError,
  "42501": PermissionDeniedError,
  "3F000": SchemaNotInstalledError,
  "42883": SchemaNotInstalledError,
  "42P01": SchemaNotInstalledError,
  "22003": ValidationError,
};

const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "ECONNABORTED", "EAI_AGAIN",
]);

interface PgLikeError {
  code?: unknown;
  column?: unknown;
  severity?: unknown;
  message?: unknown;
}

/** Whether `err` says the database could not be reached (or the connection was lost). */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof DatabaseUnavailableError) return true;
  if (err instanceof PggclError || typeof err !== "object" || err === null) return false;
  const e = err as PgLikeError;
  const code = typeof e.code === "string" ? e.code : "";
  if (/^(08|57P0)/.test(code) || NETWORK_CODES.has(code)) return true;
  const message = typeof e.message === "string" ? e.message : "";
  return e.severity === undefined
    && /Connection terminated|connection error|not queryable|Client was closed|timeout exceeded when trying to connect|socket/i.test(message);
}

/** The pggcl error for an error thrown by node-postgres (unchanged when it is none of ours). */
export function translateError(err: unknown): unknown {
  if (err instanceof PggclError || typeof err !== "object" || err === null) return err;
  const e = err as PgLikeError;
  const message = typeof e.message === "string" ? e.message : String(err);
  if (isUnavailable(err)) return new DatabaseUnavailableError(message, { sqlstate: typeof e.code === "string" && e.code.length === 5 ? e.code : null, cause: err });
  if (typeof e.code === "string" && e.severity !== undefined) {
    const cls = ENGINE[e.code];
    const field = typeof e.column === "string" ? e.column : null;
    if (cls !== undefined) return new cls(message, { sqlstate: e.code, field, cause: err });
    return new PggclError(message, { sqlstate: e.code, field, cause: err });
  }
  return err;
}
