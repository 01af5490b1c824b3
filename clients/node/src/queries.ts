// Every SQL statement the Node client runs, once (as pggcl/core/queries.py for Python): one
// autocommit statement each, unnamed (no server-side prepared statement outlives it, so the
// calls work through a transaction pooler).

export const TAKE = "SELECT pggcl.take($1::text, $2::integer, $3::integer, $4::text, $5::uuid) AS ok,"
  + " current_setting('pggcl.session_id', true) AS carried";
export const ACQUIRE = "SELECT granted, lease_id, waiter_id, retry_after, created_limits,"
  + " current_setting('pggcl.session_id', true) AS carried FROM pggcl.acquire("
  + "$1::text[], $2::integer, $3::text, $4::boolean, $5::double precision, $6::text,"
  + " $7::integer, $8::boolean, $9::uuid)";
export const RECHECK = "SELECT status, retry_after FROM pggcl.recheck($1::bigint, $2::uuid)";
export const CANCEL = "SELECT pggcl.cancel($1::bigint, $2::uuid) AS status";
export const RELEASE = "SELECT pggcl.release($1::uuid) AS ok";
export const RENEW = "SELECT pggcl.renew($1::uuid, $2::double precision) AS ok";

// The session connection. The idle timeout in effect on it, in seconds, after setting it ($1:
// milliseconds as text, NULL: keep the server's, whoever set it: postgresql.conf, the role,
// the connection's startup options); server-side TCP keepalives; and the pggcl session the
// server session already carries (there must be none: a pooler handed us someone else's).
export const KEEPALIVES = "SELECT extract(epoch FROM (CASE WHEN $1::text IS NULL"
  + " THEN current_setting('idle_session_timeout')"
  + " ELSE set_config('idle_session_timeout', $1::text, false) END)::interval)::float8 AS idle,"
  + " set_config('tcp_keepalives_idle', '5', false),"
  + " set_config('tcp_keepalives_interval', '2', false),"
  + " set_config('tcp_keepalives_count', '3', false),"
  + " current_setting('pggcl.session_id', true) AS carried";
// Opens a session only on a server session that carries none yet: the check and the open in
// one statement, so that no other client's open can come between them behind a pooler.
export const OPEN_SESSION = "SELECT c.carried, s.session_id, s.token, s.channel"
  + " FROM (SELECT current_setting('pggcl.session_id', true) AS carried OFFSET 0) c"
  + " LEFT JOIN LATERAL (SELECT * FROM pggcl.open_session($1::double precision)"
  + " WHERE coalesce(c.carried, '') = '') s ON true";
export const RESUME_SESSION = "SELECT pggcl.resume_session($1::integer, $2::uuid) AS ok";
// Also the keepalive of a quiet session connection.
export const SESSION_SETTING = "SELECT current_setting('pggcl.session_id', true) AS setting";
export const HEARTBEAT = "SELECT pggcl.heartbeat($1::integer) AS next,"
  + " current_setting('pggcl.session_id', true) AS setting";
export const CLOSE_SESSION = "SELECT pggcl.close_session()";

/** LISTEN takes no parameter: the channel comes from the engine and is checked first. */
export function listen(channel: string): string {
  if (!/^pggcl_[0-9A-Za-z_]{1,57}$/.test(channel)) throw new Error(`unexpected channel name ${JSON.stringify(channel)}`);
  return `LISTEN "${channel}"`;
}

// Management.
// The limit, then the engine's counters (revision 0009) and its template (revision 0013), as
// pggcl/core/queries.py reads them.
const LIMIT_COLUMNS = 'name, "limit", active, active_slots, slot_decay_per_second, waiting, created, updated,'
  + " held_slots, decaying_slots, grants, enqueued, denied, gave_up, rejected, reclaimed_slots,"
  + " wait_seconds_count, wait_seconds_sum, wait_seconds_buckets, hold_seconds_count,"
  + " hold_seconds_sum, hold_seconds_buckets, template, customized";
// $5 / $6 idle_seconds: a template's (revision 0013; the columns above need it anyway).
export const CREATE_LIMIT = `SELECT ${LIMIT_COLUMNS} FROM pggcl.create_limit($1::text, $2::integer, $3::double precision, $4::boolean, $5::double precision)`;
export const READ_LIMIT = `SELECT ${LIMIT_COLUMNS} FROM pggcl.limits WHERE name = $1::text`;
export const LIST_LIMITS = `SELECT ${LIMIT_COLUMNS} FROM pggcl.limits ORDER BY name`;
export const UPDATE_LIMIT = `SELECT ${LIMIT_COLUMNS} FROM pggcl.update_limit($1::text, $2::integer, $3::double precision, $4::boolean, $5::text, $6::double precision)`;
export const LIST_TEMPLATES = `SELECT name, "limit", slot_decay_per_second, active, idle_seconds, instances, created, updated FROM pggcl.templates ORDER BY name`;
export const DELETE_LIMIT = "SELECT pggcl.delete_limit($1::text) AS ok";
export const HOLDERS = "SELECT lease_id, name, slots, holder, session_id, since, expires FROM pggcl.holders"
  + " WHERE $1::text IS NULL OR name = $1::text ORDER BY since, lease_id";
export const QUEUE = "SELECT waiter_id, name, position, occupy, mode, holder, session_id, since FROM pggcl.queue"
  + " WHERE $1::text IS NULL OR name = $1::text ORDER BY name, position";
