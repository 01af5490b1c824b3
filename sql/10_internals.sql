-- Internal helpers (this file and the four after it). None of these is part of the public API
-- and none is granted to the pggcl roles: the public functions (SECURITY DEFINER) call them as
-- the schema owner, with the caller's settings (the pinned search_path among them).
--
-- Every public function follows one pattern:
--   1. validate its input (errors use SQLSTATEs of class GC, see below);
--   2. lock the limit rows it needs, in one statement, ordered by id (so no two calls deadlock);
--   3. change state only on the rows it has locked;
--   4. if it may have made room, run the grant step (pggcl._grant) on those limits, which hands
--      slots to queued waiters first come first served and NOTIFYs them.
--
-- SQLSTATEs raised by pggcl:
--   GC001 limit not found        GC002 limit already exists      GC003 invalid argument
--   GC004 occupy exceeds limit   GC005 rate limit without decay  GC006 strict: limit missing
--   GC007 unknown session        GC008 session held elsewhere
-- A GC003 error names the parameter it is about in its COLUMN field (psycopg:
-- `diag.column_name`, asyncpg: `column_name`): name, limit, slot_decay_per_second, new_name,
-- names, occupy, mode, ttl_seconds, grace_seconds or holder. Its message says what is wrong.
--
-- Bounds. Every number a caller gives is bounded so that all timestamp, float and integer
-- arithmetic on it stays in range, whoever calls later (another caller, a manager, reclaim):
--   limit                  0 .. 1,000,000,000 slots    (held + occupy stays below 2^31 - 1)
--   occupy                 1 .. 1,000,000,000 slots
--   slot_decay_per_second  0, or 1e-9 .. 1e9 slots per second (level / decay and
--                          decay * elapsed stay finite)
--   ttl_seconds            above 0, at most 315,360,000 s (10 years)
--   grace_seconds          0 .. 315,360,000 s (10 years)
--   holder                 at most 1000 characters (free text, kept as given; the views, the
--                          CLI and the UI show it, and every lease row of a request repeats it)
-- Ten years is far beyond any lease a person will come back for (a longer one is a lease
-- nobody releases: give it a session instead) and far inside every timestamp's range.
-- Names: 1 to 255 characters, none of / % & > <, no control characters (U+0000-U+001F,
-- U+007F-U+009F) and no bidirectional formatting characters (U+061C, U+200E, U+200F,
-- U+202A-U+202E, U+2066-U+2069). Names are kept exactly as given: leading and trailing spaces
-- stay, and no Unicode normalisation is applied (names compare as given).
--
-- No trojans. The SQL helpers below schema-qualify every function and operator
-- (OPERATOR(pg_catalog.=)): PostgreSQL inlines them into the calling query and parses them there
-- with the caller's search_path, and pggcl.limits calls _decayed as whoever reads the view
-- (a superuser, perhaps, with an attacker's schema first on the path). A SET search_path would
-- pin it too, but stops the inlining that the hot path's UPDATEs rely on. Every PL/pgSQL
-- function pins search_path = pg_catalog, pg_temp (functions and operators are never looked
-- up in pg_temp): the public ones on their definitions, the helpers in the file
-- 85_pinned_helpers.sql (revision 0011; about 1.8 us a call). And no pggcl role may call
-- a PL/pgSQL helper: everything another role may execute, directly or through a view, is a
-- public function or an SQL helper that qualifies everything and calls only such helpers.
-- tests/sql/test_hardening.py checks these rules on the catalog.
--
-- This file: what a limit's numbers mean, and the checks of what callers give.

-- The first key of every pggcl advisory lock; the second is the session id.
CREATE FUNCTION pggcl._lock_space() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1885824867 $$;  -- 'pggc'

-- Rate-limit level of a limit at time `at`: `level` as it stood at `level_at`, decayed
-- continuously at `decay` slots per second since. Statements over pggcl.limit_state pass the
-- columns: a row-typed argument would make PostgreSQL build a copy of the whole row for every
-- call (measured: a third of an uncontended acquire's server time).
CREATE FUNCTION pggcl._decayed(level double precision, decay double precision, level_at timestamptz,
                               at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN level OPERATOR(pg_catalog.=) 0::double precision THEN 0::double precision
                ELSE greatest(0::double precision,
                              level OPERATOR(pg_catalog.-) (decay OPERATOR(pg_catalog.*)
                                  pg_catalog.date_part('epoch', at OPERATOR(pg_catalog.-) level_at))) END
$$;

-- Whether `occupy` more slots fit on a limit at `at`. Inactive limits always have room. The
-- tolerance absorbs float rounding so that a caller who waited exactly retry_after gets in.
CREATE FUNCTION pggcl._fits(active boolean, "limit" integer, held integer, level double precision,
                            decay double precision, level_at timestamptz, occupy integer,
                            at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT NOT active
        OR (held OPERATOR(pg_catalog.+) pggcl._decayed(level, decay, level_at, at) OPERATOR(pg_catalog.+) occupy)
           OPERATOR(pg_catalog.<=) ("limit" OPERATOR(pg_catalog.+) 1e-9)
$$;

-- The same two for a limit_state value held in a PL/pgSQL variable.
CREATE FUNCTION pggcl._level(l pggcl.limit_state, at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT pggcl._decayed(l.level, l.slot_decay_per_second, l.level_at, at)
$$;

CREATE FUNCTION pggcl._has_room(l pggcl.limit_state, occupy integer, at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT pggcl._fits(l.active, l."limit", l.held, l.level, l.slot_decay_per_second, l.level_at, occupy, at)
$$;

-- The histogram bucket (1 to 12) of a wait or hold of `seconds`: the first upper bound it does
-- not exceed among 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600 s, and 12 (+Inf) above
-- them (Prometheus's `le`: a bound is inclusive). pggcl/ui/metrics.py has the same bounds.
CREATE FUNCTION pggcl._bucket(seconds double precision) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN seconds OPERATOR(pg_catalog.<=) 0.001::double precision THEN 1
                WHEN seconds OPERATOR(pg_catalog.<=) 0.005::double precision THEN 2
                WHEN seconds OPERATOR(pg_catalog.<=) 0.01::double precision THEN 3
                WHEN seconds OPERATOR(pg_catalog.<=) 0.05::double precision THEN 4
                WHEN seconds OPERATOR(pg_catalog.<=) 0.1::double precision THEN 5
                WHEN seconds OPERATOR(pg_catalog.<=) 0.5::double precision THEN 6
                WHEN seconds OPERATOR(pg_catalog.<=) 1::double precision THEN 7
                WHEN seconds OPERATOR(pg_catalog.<=) 5::double precision THEN 8
                WHEN seconds OPERATOR(pg_catalog.<=) 10::double precision THEN 9
                WHEN seconds OPERATOR(pg_catalog.<=) 60::double precision THEN 10
                WHEN seconds OPERATOR(pg_catalog.<=) 600::double precision THEN 11
                ELSE 12 END
$$;

-- Seconds between two moments, as a double (the wait and hold times counted).
CREATE FUNCTION pggcl._seconds(since timestamptz, at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.date_part('epoch', at OPERATOR(pg_catalog.-) since)
$$;

-- `counts` with one more in each bucket of `buckets` (one element per event).
CREATE FUNCTION pggcl._counted(counts bigint[], buckets integer[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    b integer;
BEGIN
    FOREACH b IN ARRAY coalesce(buckets, '{}') LOOP
        counts[b] := counts[b] + 1;
    END LOOP;
    RETURN counts;
END
$$;

-- Seconds from `at` until `later` (0 when it has passed), NULL when `later` is NULL.
CREATE FUNCTION pggcl._seconds_until(later timestamptz, at timestamptz) RETURNS double precision STRICT
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(0::double precision, extract(epoch FROM later OPERATOR(pg_catalog.-) at)::double precision)
$$;

-- The elements of `a` that are also in `b`, in the order of `a`.
CREATE FUNCTION pggcl._intersect(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(x), '{}') FROM unnest(a) x WHERE x = ANY(b));
END
$$;

-- What a name must not contain besides / % & > <: control characters and bidirectional
-- formatting characters, as a regular expression.
CREATE FUNCTION pggcl._unprintable() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '[\u0001-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]'::text
$$;

-- Whether `name` is a valid limit name (the rules are at the top of this file). The cheap test
-- that the usual path runs; _check_name says what is wrong.
CREATE FUNCTION pggcl._valid_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT name IS NOT NULL AND name OPERATOR(pg_catalog.<>) ''
       AND pg_catalog.length(name) OPERATOR(pg_catalog.<=) 255
       AND name OPERATOR(pg_catalog.!~) '[/%&><]' AND name OPERATOR(pg_catalog.!~) pggcl._unprintable()
$$;

-- Whether `seconds` is absent (NULL) or a number of seconds above 0 and at most 10 years.
CREATE FUNCTION pggcl._valid_seconds(seconds double precision) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT seconds IS NULL
        OR (seconds OPERATOR(pg_catalog.>) 0::double precision
            AND seconds OPERATOR(pg_catalog.<=) 315360000::double precision)
$$;

-- Raise the error that says what is wrong with a name (the rules are in _valid_name); `field`
-- is the parameter it came in (name, new_name or names), named in the error's COLUMN field.
CREATE FUNCTION pggcl._check_name(name text, field text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    bad text;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field,
            MESSAGE = 'invalid limit name: it must not be empty';
    ELSIF name ~ pggcl._unprintable() THEN
        -- The name itself is not shown: it holds what a terminal or a page must not print.
        bad := substring(name from pggcl._unprintable());
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field, MESSAGE = format(
            'invalid limit name: character %s is U+%s, a control or bidirectional formatting '
            'character; names must be printable', strpos(name, bad), upper(lpad(to_hex(ascii(bad)), 4, '0')));
    ELSIF length(name) > 255 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field, MESSAGE = format(
            'invalid limit name %L: it is %s characters long, at most 255 are allowed',
            left(name, 40) || '...', length(name));
    ELSIF name ~ '[/%&><]' THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = field, MESSAGE = format(
            'invalid limit name %L: it must not contain any of / %% & > <', name);
    END IF;
END
$$;

-- Raise GC003 (COLUMN limit or slot_decay_per_second) unless `limit` is NULL or within its
-- bounds and `slot_decay_per_second` is NULL or within its bounds (see the top of this file).
-- `name` is the limit, for the message.
CREATE FUNCTION pggcl._check_limit_values(name text, "limit" integer, slot_decay_per_second double precision)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF "limit" < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'limit', MESSAGE = format(
            'invalid limit for %L: %s; it must be 0 or more slots', name, "limit");
    ELSIF "limit" > 1000000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'limit', MESSAGE = format(
            'invalid limit for %L: %s; it must be at most 1000000000 slots', name, "limit");
    END IF;
    IF NOT (slot_decay_per_second >= 0 AND slot_decay_per_second < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'slot_decay_per_second', MESSAGE = format(
            'invalid slot_decay_per_second for %L: %s; it must be a finite number, 0 or more',
            name, slot_decay_per_second);
    ELSIF slot_decay_per_second > 0 AND NOT slot_decay_per_second BETWEEN 1e-9 AND 1e9 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'slot_decay_per_second', MESSAGE = format(
            'invalid slot_decay_per_second for %L: %s; it must be 0 or from 1e-09 to 1e+09 slots per second',
            name, slot_decay_per_second);
    END IF;
END
$$;

-- Raise GC003 (COLUMN `what`, the parameter's name) unless `seconds` is valid (_valid_seconds).
CREATE FUNCTION pggcl._check_seconds(what text, seconds double precision) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT (seconds > 0 AND seconds < 'Infinity') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = what, MESSAGE = format(
            'invalid %s: %s; it must be a finite number of seconds above 0', what, seconds);
    ELSIF NOT pggcl._valid_seconds(seconds) THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = what, MESSAGE = format(
            'invalid %s: %s; it must be at most 315360000 seconds (10 years)', what, seconds);
    END IF;
END
$$;

-- The names a request for slots asks for, distinct and sorted (the order limits are locked
-- in), once every argument is valid; otherwise GC003 naming the parameter: occupy (a whole
-- number of slots within its bounds), mode, ttl_seconds, names (an array of valid names).
-- (Conditions without subqueries are evaluated without starting the executor: the usual path
-- is written so that only its real work runs queries.)
CREATE FUNCTION pggcl._checked_request(names text[], occupy integer, mode text,
                                       ttl_seconds double precision) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    wanted text[];
    n text;
BEGIN
    IF occupy IS NULL OR occupy < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'occupy', MESSAGE = format(
            'invalid occupy: %s; it must be a whole number of slots, 1 or more', coalesce(occupy::text, 'NULL'));
    ELSIF occupy > 1000000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'occupy', MESSAGE = format(
            'invalid occupy: %s; it must be at most 1000000000 slots', occupy);
    END IF;
    IF mode IS NULL OR mode NOT IN ('concurrency', 'rate_limit') THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'mode', MESSAGE = format(
            'invalid mode: %s; it must be ''concurrency'' or ''rate_limit''', coalesce(quote_literal(mode), 'NULL'));
    END IF;
    IF NOT pggcl._valid_seconds(ttl_seconds) THEN
        PERFORM pggcl._check_seconds('ttl_seconds', ttl_seconds);
    END IF;
    IF names IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'names',
            MESSAGE = 'invalid names: an array of limit names is required';
    END IF;
    IF cardinality(names) = 1 AND array_ndims(names) = 1 THEN
        wanted := names;
    ELSE  -- (also flattens a multidimensional array, such as '{{a}}', whose names[1] is NULL)
        wanted := array(SELECT DISTINCT x FROM unnest(names) x ORDER BY x);
    END IF;
    FOREACH n IN ARRAY wanted LOOP
        IF NOT pggcl._valid_name(n) THEN
            PERFORM pggcl._check_name(n, 'names');
        END IF;
    END LOOP;
    RETURN wanted;
END
$$;

-- The longest holder text accepted (see the bounds above).
CREATE FUNCTION pggcl._holder_bound() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1000 $$;

-- Raise GC003 (COLUMN holder) when `holder` is longer than _holder_bound() characters.
CREATE FUNCTION pggcl._check_holder(holder text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF length(holder) > pggcl._holder_bound() THEN
        RAISE EXCEPTION USING ERRCODE = 'GC003', COLUMN = 'holder', MESSAGE = format(
            'invalid holder %L: it is %s characters long, at most %s are allowed',
            left(holder, 40) || '...', length(holder), pggcl._holder_bound());
    END IF;
END
$$;
