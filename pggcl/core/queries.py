"""Every SQL statement the clients run, once, with ``$n`` placeholders and explicit casts.

asyncpg runs them as they are; psycopg runs them through its raw cursor. Each statement is one
autocommit round trip. (Named ``_queries`` because the wheel ships the engine's ``sql/`` files
as the ``pggcl/_sql`` directory.)
"""

from __future__ import annotations

import re
from typing import Final

_ACQUIRE: Final = (
    "SELECT granted, lease_id, waiter_id, retry_after, created_limits FROM pggcl.acquire("
    "$1::text[], $2::integer, $3::text, $4::boolean, $5::double precision, $6::text,"
    " $7::integer, $8::boolean, $9::uuid"
)
ACQUIRE: Final = _ACQUIRE + ")"
# The same with a priority (revision 0015); without one the call above, which a schema before
# priorities knows too (the acquire path keeps working while a database is being upgraded).
ACQUIRE_WITH_PRIORITY: Final = _ACQUIRE + ", $10::double precision)"
TAKE: Final = "SELECT pggcl.take($1::text, $2::integer, $3::integer, $4::text, $5::uuid)"
RECHECK: Final = "SELECT status, retry_after FROM pggcl.recheck($1::bigint, $2::uuid)"
CANCEL: Final = "SELECT pggcl.cancel($1::bigint, $2::uuid)"
RELEASE: Final = "SELECT pggcl.release($1::uuid)"
# Renews many leases in one call: rows (lease_id, still held).
RENEW_MANY: Final = (
    "SELECT u.lease_id, pggcl.renew(u.lease_id, u.ttl)"
    " FROM unnest($1::uuid[], $2::double precision[]) AS u(lease_id, ttl)"
)


# The session connection.
# The idle timeout in effect on this connection, in seconds, after setting it ($1:
# milliseconds, NULL: keep the server's; see Options.idle_session_timeout_seconds);
# server-side TCP keepalives; and the session already on this server connection (there should
# be none: see pggcl.core.policy.check_fresh_connection).
KEEPALIVES: Final = (
    "SELECT extract(epoch FROM (CASE WHEN $1::text IS NULL"
    " THEN current_setting('idle_session_timeout')"
    " ELSE set_config('idle_session_timeout', $1::text, false) END)::interval)::float8,"
    " set_config('tcp_keepalives_idle', '5', false),"
    " set_config('tcp_keepalives_interval', '2', false),"
    " set_config('tcp_keepalives_count', '3', false),"
    " current_setting('pggcl.session_id', true)"
)
# Opens a session only on a server session that carries none yet (the check and the open in
# one statement, so that no other client's open can come between them behind a pooler); the
# first column is the session the server session already carried, if any.
OPEN_SESSION: Final = (
    "SELECT c.carried, s.session_id, s.token, s.channel"
    " FROM (SELECT current_setting('pggcl.session_id', true) AS carried OFFSET 0) c"
    " LEFT JOIN LATERAL (SELECT * FROM pggcl.open_session($1::double precision)"
    " WHERE coalesce(c.carried, '') = '') s ON true"
)
RESUME_SESSION: Final = "SELECT pggcl.resume_session($1::integer, $2::uuid)"
CLOSE_SESSION: Final = "SELECT pggcl.close_session()"
CLOSE_SESSION_OF: Final = "SELECT pggcl.close_session($1::integer, $2::uuid)"
# With the session's per-connection setting: a pooler that moved us shows there.
HEARTBEAT: Final = "SELECT pggcl.heartbeat($1::integer), current_setting('pggcl.session_id', true)"
# The engine keeps the session id in a per-connection setting; see policy.check_session_kept.
# Also the keepalive of an idle session connection.
SESSION_SETTING: Final = "SELECT current_setting('pggcl.session_id', true)"
NOTIFY: Final = "SELECT pg_notify($1::text, $2::text)"


def listen(channel: str) -> str:
    """LISTEN cannot take a parameter; the channel comes from the engine (``pggcl_`` and
    letters, digits and underscores), and is checked before it is spliced in."""
    if not re.fullmatch(r"pggcl_[0-9A-Za-z_]{1,57}", channel):
        raise ValueError(f"unexpected channel name {channel!r}")
    return f'LISTEN "{channel}"'


# Management.
_LIMIT_COLUMNS: Final = (
    'name, "limit", active, active_slots, slot_decay_per_second, waiting, created, updated,'
    " held_slots, decaying_slots, grants, enqueued, denied, gave_up, rejected, reclaimed_slots,"
    " wait_seconds_count, wait_seconds_sum, wait_seconds_buckets, hold_seconds_count,"
    " hold_seconds_sum, hold_seconds_buckets, template, customized"
)
# $5 idle_seconds: a template's (revision 0013; the columns above need it anyway).
CREATE_LIMIT: Final = (
    f"SELECT {_LIMIT_COLUMNS} FROM pggcl.create_limit("
    "$1::text, $2::integer, $3::double precision, $4::boolean, $5::double precision)"
)
READ_LIMIT: Final = f"SELECT {_LIMIT_COLUMNS} FROM pggcl.limits WHERE name = $1::text"
LIST_LIMITS: Final = f"SELECT {_LIMIT_COLUMNS} FROM pggcl.limits ORDER BY name"
UPDATE_LIMIT: Final = (
    f"SELECT {_LIMIT_COLUMNS} FROM pggcl.update_limit("
    "$1::text, $2::integer, $3::double precision, $4::boolean, $5::text, $6::double precision)"
)
LIST_TEMPLATES: Final = (
    'SELECT name, "limit", slot_decay_per_second, active, idle_seconds, instances, created,'
    " updated FROM pggcl.templates ORDER BY name"
)
# Every plain limit, each template's $1 busiest instances (most slots in use plus waiting,
# then by name) and the limits named in $2, chosen in the database: a template's million
# instances never reach the client (what /metrics and the UI read).
# Ranked on the few columns the order needs first (the planner then skips the histograms of
# the rows left out), the rows shown read by name.
BUSIEST_LIMITS: Final = (
    f"SELECT {_LIMIT_COLUMNS} FROM pggcl.limits WHERE name = ANY(ARRAY("
    "SELECT r.name FROM (SELECT name, CASE WHEN template IS NULL THEN 0 ELSE row_number()"
    " OVER (PARTITION BY template ORDER BY active_slots + waiting DESC, name) END AS rank"
    " FROM pggcl.limits) r WHERE r.rank <= $1::integer) || $2::text[]) ORDER BY name"
)
# The instances of template $1 in name order, after name $2 (NULL: from the first), $3 at most.
# (Names first, then their rows: the planner sorts the names alone.)
LIST_INSTANCES: Final = (
    f"SELECT {_LIMIT_COLUMNS} FROM pggcl.limits WHERE name = ANY(ARRAY("
    "SELECT i.name FROM pggcl.limits i WHERE i.template = $1::text"
    " AND ($2::text IS NULL OR i.name > $2::text) ORDER BY i.name LIMIT $3::integer))"
    " ORDER BY name"
)
# Every template's instances taken together (revision 0014).
TEMPLATE_TOTALS: Final = (
    'SELECT name, "limit", slot_decay_per_second, active, instances, active_slots, waiting,'
    " held_slots, decaying_slots, grants, enqueued, denied, gave_up, rejected, reclaimed_slots,"
    " wait_seconds_count, wait_seconds_sum, wait_seconds_buckets, hold_seconds_count,"
    " hold_seconds_sum, hold_seconds_buckets, retired_instances"
    " FROM pggcl.template_totals ORDER BY name"
)
DELETE_LIMIT: Final = "SELECT pggcl.delete_limit($1::text)"
HOLDERS: Final = (
    "SELECT lease_id, name, slots, holder, session_id, since, expires FROM pggcl.holders"
    " WHERE $1::text IS NULL OR name = $1::text ORDER BY name, since, lease_id"
)
QUEUE: Final = (
    "SELECT waiter_id, name, position, occupy, mode, holder, session_id, since, priority"
    " FROM pggcl.queue"
    " WHERE $1::text IS NULL OR name = $1::text ORDER BY name, position"
)

# Why queued requests wait (revision 0012): one row per waiter and limit it waits on. The
# holders come as jsonb text, parsed by the core (asyncpg and psycopg decode jsonb apart).
_EXPLAIN_COLUMNS: Final = (
    'name, blocking, position, occupy, mode, "limit", active, held_slots, active_slots,'
    " leases, holders::text, seconds_until_room, since"
)
EXPLAIN: Final = (
    f"SELECT $1::bigint, {_EXPLAIN_COLUMNS} FROM pggcl.explain($1::bigint, $2::integer)"
)
# The waiters $1 (a client's own), in arrival order, then by limit.
EXPLAIN_MANY: Final = (
    f"SELECT w.id, {_EXPLAIN_COLUMNS}"
    " FROM unnest($1::bigint[]) AS w(id), LATERAL pggcl.explain(w.id, $2::integer)"
    " ORDER BY w.id, name"
)
# Every queued request (of limit $1 only, when not NULL), in arrival order, then by limit.
EXPLAIN_QUEUE: Final = (
    f"SELECT q.waiter_id, {_EXPLAIN_COLUMNS}"
    " FROM (SELECT DISTINCT w.waiter_id FROM pggcl.queue w"
    " WHERE $1::text IS NULL OR w.name = $1::text) q,"
    " LATERAL pggcl.explain(q.waiter_id, $2::integer)"
    " ORDER BY q.waiter_id, name"
)
