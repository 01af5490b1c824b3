-- pggcl: global concurrency limits and rate limits inside PostgreSQL.
--
-- This file creates the schema, the two roles and the tables. Tables are private: every write
-- goes through the functions in the files that follow, and reads go through the views. The files
-- of this directory, applied in file-name order, are the whole fresh install (`pggcl db sql`).

-- The install runs with only pg_catalog (and pg_temp, for relations) on the search_path: a view
-- is bound to the operators and functions it finds when it is created, so an operator planted in
-- a schema on the installer's path (public.+(integer, double precision), say) would otherwise be
-- bound into pggcl.limits for good. (`pggcl db sql` resets it before its last statement.)
SET search_path = pg_catalog, pg_temp;

CREATE SCHEMA pggcl;
COMMENT ON SCHEMA pggcl IS 'pggcl: global concurrency limits and rate limits (see README)';

-- Roles are cluster-wide, so they may already exist from an install in another database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pggcl_user') THEN
        CREATE ROLE pggcl_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pggcl_admin') THEN
        CREATE ROLE pggcl_admin NOLOGIN;
    END IF;
    IF NOT pg_catalog.pg_has_role('pggcl_admin', 'pggcl_user', 'MEMBER') THEN
        GRANT pggcl_user TO pggcl_admin;
    END IF;
END
$$;

-- One row per limit. Occupancy at time t is
--     held + greatest(0, level - slot_decay_per_second * (t - level_at))
-- where `held` counts the slots of concurrency leases and `level` is the rate-limit bucket as it
-- stood at `level_at`. The level is a float that decays continuously; it is materialised only
-- when it changes, so refusals and reads write nothing.
-- `queued` lets the usual acquire decide from this one row: a single conditional UPDATE.
-- The functions validate every value they write; the tables carry no CHECK constraints because
-- PostgreSQL re-parses those at every UPDATE, and this row is updated on every acquire.
CREATE TABLE pggcl.limit_state (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    "limit" integer NOT NULL,
    slot_decay_per_second double precision NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    held integer NOT NULL DEFAULT 0,
    queued integer NOT NULL DEFAULT 0,  -- waiters queued here; kept under this row's lock
    -- No waiter on this limit has an id this low or lower (the last head of its queue that was
    -- served): reading the queue starts above it, not at the dead index entries that a busy
    -- queue leaves behind faster than vacuum removes them.
    queue_from bigint NOT NULL DEFAULT 0,
    level double precision NOT NULL DEFAULT 0,
    level_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Counters (the limits view shows them; docs/protocol.md says what each counts). Each is
    -- kept by the statement that makes the change it counts, in the UPDATE of this row that
    -- the change needs anyway: counting takes no other row, no other lock. They only grow.
    grants bigint NOT NULL DEFAULT 0,           -- requests granted, at once or after queuing
    enqueued bigint NOT NULL DEFAULT 0,         -- requests that had to queue
    denied bigint NOT NULL DEFAULT 0,           -- try_acquire refused (on the limits in the way)
    gave_up bigint NOT NULL DEFAULT 0,          -- waiters gone without a grant (cancel, timeout,
                                                -- their session closed or died)
    rejected bigint NOT NULL DEFAULT 0,         -- waiters told 'e:' (can never be granted)
    reclaimed_slots bigint NOT NULL DEFAULT 0,  -- slots of dead holders and expired TTLs
    -- Wait time (enqueued to granted) of the requests granted after queuing, and hold time
    -- (granted to released or reclaimed) of the lease rows that ended, in seconds: the sums,
    -- and per bucket of _bucket the number that fell in it (not cumulative: one element is
    -- incremented per event). Last in the row: an UPDATE that leaves them alone logs less.
    wait_seconds_sum double precision NOT NULL DEFAULT 0,
    hold_seconds_sum double precision NOT NULL DEFAULT 0,
    wait_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}',
    hold_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}',
    -- With queue_from: the queue's order is (serve_key, id) (revision 0015, priorities), and
    -- no waiter here is at or before (queue_from_key, queue_from) in it.
    queue_from_key double precision NOT NULL DEFAULT '-Infinity'
);

-- A session is one client connection that registered itself. It holds the session-level
-- advisory lock (1885824867, id) for as long as it lives; PostgreSQL drops that lock when the
-- backend ends, however it ends, which is how everyone else learns the session is dead.
-- Ids are integers because the two-key advisory lock takes integers.
CREATE SEQUENCE pggcl.session_id_seq AS integer MINVALUE 1 CYCLE;
CREATE TABLE pggcl.sessions (
    id integer PRIMARY KEY DEFAULT nextval('pggcl.session_id_seq'),
    token uuid NOT NULL DEFAULT gen_random_uuid(),
    backend_pid integer NOT NULL,
    grace_seconds double precision NOT NULL,
    dead_since timestamptz,
    reclaimed boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The channel its notifications go to: 'pggcl_<id>_<32 random hex digits>', so that no one
    -- who does not know it can LISTEN to it or NOTIFY on it (open_session tells its owner).
    channel text,
    -- The role that opened it (session_user): only that role acts on the session, its leases
    -- and its waiters (managers may also release, renew and cancel). NULL only for sessions
    -- opened before revision 0006, which anyone may use, as then.
    owner_role name,
    -- When its backend started (pg_stat_activity.backend_start), beside backend_pid: a pid may
    -- be reused by a later backend, which is not the session. NULL before revision 0008.
    backend_start timestamptz
);
ALTER SEQUENCE pggcl.session_id_seq OWNED BY pggcl.sessions.id;

-- A lease is the set of rows sharing one id: one row per limit it holds slots on. Keeping a row
-- per limit lets every operation touch only the limits it has locked (a reclaim on limit A never
-- needs the lock of limit B). `occupy` is 0 on limits that were inactive when it was granted.
CREATE TABLE pggcl.leases (
    id uuid NOT NULL,
    limit_id bigint NOT NULL,
    occupy integer NOT NULL,
    session_id integer,
    holder text,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz,
    -- The role that took a lease without a session (a TTL lease): only that role (or a
    -- manager) releases or renews it. NULL on session leases (the session's role owns them)
    -- and on TTL leases taken before revision 0008 (anyone may act on those, as then).
    owner_role name,
    PRIMARY KEY (id, limit_id)
);
CREATE INDEX leases_limit_idx ON pggcl.leases (limit_id);

-- A waiter is a queued request: one row per limit, all rows sharing one id. Ids grow with
-- arrival. Each queue is served in the order (serve_key, id): serve_key is when it arrived (as
-- epoch seconds) less its priority, a head start in seconds (revision 0015), so a request with
-- priority p is served as if it had come p seconds earlier, ties by arrival; with no priority
-- that is first come, first served. `limit_ids` repeats the whole set so that the grant step can
-- tell, from one row, whether it holds the locks of every limit involved.
CREATE SEQUENCE pggcl.waiter_id_seq AS bigint;
CREATE TABLE pggcl.waiters (
    id bigint NOT NULL,
    limit_id bigint NOT NULL,
    limit_ids bigint[] NOT NULL,
    session_id integer NOT NULL,
    lease_id uuid NOT NULL,
    occupy integer NOT NULL,
    mode text NOT NULL,
    holder text,
    ttl_seconds double precision,
    enqueued_at timestamptz NOT NULL,
    priority double precision NOT NULL DEFAULT 0,
    serve_key double precision NOT NULL,
    PRIMARY KEY (limit_id, id)
);
CREATE INDEX waiters_id_idx ON pggcl.waiters (id);
CREATE INDEX waiters_serve_idx ON pggcl.waiters (limit_id, serve_key, id);
CREATE INDEX waiters_session_idx ON pggcl.waiters (session_id);

-- When a session was first seen dead by someone who only read (the views: see _dead_since in
-- 20_limits.sql), for the backend it was then registered to. A reader cannot write
-- sessions.dead_since: the row lock would be held until its transaction ends, and reclaims and
-- resume_session would wait for it. Inserting here locks nothing anyone waits for (no unique
-- index: two readers may both insert; the earliest counts). Rows go with their session.
CREATE TABLE pggcl.sightings (
    session_id integer NOT NULL,
    backend_pid integer NOT NULL,
    seen_at timestamptz NOT NULL
);
CREATE INDEX sightings_session_idx ON pggcl.sightings (session_id);

-- Rate-limit grants made to queued waiters, which leave no lease (revision 0010): once the
-- waiter row is gone, recheck and cancel answer 'granted' from here, never from the absence
-- of a row (a waiter reclaimed with its session, dropped or rejected is gone too). Kept an
-- hour; _record_rate_grant removes older rows.
CREATE TABLE pggcl.rate_grants (
    waiter_id bigint PRIMARY KEY,
    session_id integer NOT NULL,
    granted_at timestamptz NOT NULL
);
CREATE INDEX rate_grants_granted_at_idx ON pggcl.rate_grants (granted_at);

-- Templates (revision 0013): a limit whose name contains `*` is a template; a request naming
-- a missing limit that matches one creates that limit (an instance) active, with the
-- template's values, instead of inactive. `like_pattern` is the pattern as a LIKE pattern (`*`:
-- one or more characters); `literal_length` its characters other than `*` (the most specific
-- template wins). `sweep_after`: the instance (limit id) the last sweep of idle instances
-- stopped at (see _sweep_instances).
CREATE TABLE pggcl.limit_templates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pattern text NOT NULL UNIQUE,
    like_pattern text NOT NULL,
    literal_length integer NOT NULL,
    "limit" integer NOT NULL,
    slot_decay_per_second double precision NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    idle_seconds double precision NOT NULL DEFAULT 3600,
    sweep_after bigint NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The counters of its instances that the sweep removed (revision 0014), kept here so that
    -- the template's totals (pggcl.template_totals: these plus those of the instances that
    -- exist) only grow: the instances swept, then what limit_state counts, the buckets raw
    -- as there (one element per event, waits only of the grants that queued). The sums of
    -- seconds are numeric, added exactly: a float total would change by a rounding when an
    -- instance moved from the live sum to this one, and could go down.
    retired_instances bigint NOT NULL DEFAULT 0,
    retired_grants bigint NOT NULL DEFAULT 0,
    retired_enqueued bigint NOT NULL DEFAULT 0,
    retired_denied bigint NOT NULL DEFAULT 0,
    retired_gave_up bigint NOT NULL DEFAULT 0,
    retired_rejected bigint NOT NULL DEFAULT 0,
    retired_reclaimed_slots bigint NOT NULL DEFAULT 0,
    retired_wait_seconds_sum numeric NOT NULL DEFAULT 0,
    retired_hold_seconds_sum numeric NOT NULL DEFAULT 0,
    retired_wait_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}',
    retired_hold_buckets bigint[] NOT NULL DEFAULT '{0,0,0,0,0,0,0,0,0,0,0,0}'
);

-- The limits made from a template: one row per instance, apart from limit_state so that the
-- hot path's row stays as it was. `customized`: changed individually since (a change of the
-- template then leaves it alone). `idle_seen_at`, `idle_activity`: when a sweep first saw it
-- idle, and its activity then (grants + enqueued + denied): a later sweep that finds it still
-- idle with the same activity knows it was not used in between, without the hot path writing
-- anything.
CREATE TABLE pggcl.limit_instances (
    limit_id bigint PRIMARY KEY,
    template_id bigint NOT NULL,
    customized boolean NOT NULL DEFAULT false,
    idle_seen_at timestamptz,
    idle_activity bigint
);
CREATE INDEX limit_instances_template_idx ON pggcl.limit_instances (template_id, limit_id);
