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

type ErrorClass = new (m: string, o: { sqlstate?: string | null; field?: string | null; cause?: unknown }) => PggclError;

// The mapping of pggcl/core/failures.py (translate_error), rule for rule, in its order:
// 1. the engine's own SQLSTATEs (pggcl.errors.ENGINE_SQLSTATES);
// 2. a lost connection, or SQLSTATE class 08 or 57 whole (57014 query_canceled included: a
//    statement_timeout or a cancel request), is DatabaseUnavailableError (isUnavailable);
// 3. 26000/42P05 (a named prepared statement missing or already there): a transaction pooler
//    moved the connection, ConfigurationError;
// 4. 22003 out of range, ValidationError (with the COLUMN field);
// 5. 3F000, 42883, 42P01, 42703 (schema, function, table or view, column missing): the schema
//    is missing or older than the client, SchemaNotInstalledError;
// 6. 42501, PermissionDeniedError; anything else a plain PggclError (with the COLUMN field).
const ENGINE: Record<string, ErrorClass> = {
  GC001: LimitNotFoundError,
  GC002: LimitExistsError,
  GC003: ValidationError,
  GC004: ConcurrencySlotAcquisitionError,
  GC005: ConcurrencySlotAcquisitionError,
  GC006: ConcurrencySlotAcquisitionError,
  GC007: SessionLostError,
  GC008: SessionLostError,
};

const LOST_CLASSES = /^(08|57)/;
const PREPARED_STATEMENT_MOVED = new Set(["26000", "42P05"]);
const OUT_OF_RANGE = "22003";
const NOT_INSTALLED = new Set(["3F000", "42883", "42P01", "42703"]);
const INSUFFICIENT_PRIVILEGE = "42501";

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
  if ((code.length === 5 && LOST_CLASSES.test(code)) || NETWORK_CODES.has(code)) return true;
  const message = typeof e.message === "string" ? e.message : "";
  return e.severity === undefined
    && /Connection terminated|connection error|not queryable|Client was closed|timeout exceeded when trying to connect|socket/i.test(message);
}

/** The pggcl error for an error thrown by node-postgres (unchanged when it is none of ours):
 * the classes and messages of the Python clients' translate_error (pggcl/core/failures.py). */
export function translateError(err: unknown): unknown {
  if (err instanceof PggclError || typeof err !== "object" || err === null) return err;
  const e = err as PgLikeError;
  const message = typeof e.message === "string" ? e.message : String(err);
  const code = typeof e.code === "string" && e.code.length === 5 ? e.code : null;
  const fromServer = code !== null && e.severity !== undefined;
  const field = typeof e.column === "string" ? e.column : null;
  const engine = fromServer ? ENGINE[code] : undefined;
  if (engine !== undefined) return new engine(message, { sqlstate: code, field, cause: err });
  if (isUnavailable(err)) {
    return new DatabaseUnavailableError(`the database is unreachable: ${message}`.trim(), { sqlstate: code, cause: err });
  }
  if (!fromServer) return err;
  if (PREPARED_STATEMENT_MOVED.has(code)) {
    return new ConfigurationError(
      `${message}: a connection pooler in transaction or statement mode is between pggcl and PostgreSQL;`
      + " give pggcl a direct connection for its session (sessionDsn, or PGGCL_SESSION_DSN) and send only"
      + " its calls through the pooler", { sqlstate: code, cause: err });
  }
  if (code === OUT_OF_RANGE) return new ValidationError(`a value is out of range: ${message}`, { sqlstate: code, field, cause: err });
  if (NOT_INSTALLED.has(code)) {
    return new SchemaNotInstalledError(
      `pggcl is not installed in this database (run \`pggcl db upgrade\`): ${message}`, { sqlstate: code, cause: err });
  }
  if (code === INSUFFICIENT_PRIVILEGE) {
    return new PermissionDeniedError(
      `${message} (the database role needs pggcl_admin to manage limits, pggcl_user to use them)`, { sqlstate: code, cause: err });
  }
  return new PggclError(message, { sqlstate: code, field, cause: err });
}
