"""The alembic chain: reversible, repeatable, frozen, and equal to a fresh install."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import psycopg
import pytest
from alembic.script import ScriptDirectory

from pggcl import schema
from tests.catalog import differences, snapshot

# Every released revision's frozen scripts, by file name, with their sha256 (first 32 digits).
# A released revision never changes: a change to the engine is a new revision (see
# alembic/versions/0001_initial.py). Add its lines here when a revision is released; never edit
# one.
FROZEN = {
    "0001_initial.sql": "d541c55554b24927394e3d02f79d6e41",
    "0002_engine_by_job.sql": "570348e2e85ec8cea2ca55c687dc91c9",
    "0002_engine_by_job_downgrade.sql": "bbd9c452fd065c6b2c5a2c9a61875c8e",
    "0003_bounds_names_no_trojans.sql": "2535b791f335c1c637cda330afb9bee1",
    "0003_bounds_names_no_trojans_downgrade.sql": "42702543f6f7ded6fcb26ec65c983fc6",
    "0004_names_array.sql": "06044cf94242374e0db8921843500875",
    "0004_names_array_downgrade.sql": "d89d43a731f1052d3ada7c33737d5d61",
    "0005_dead_waiters_no_takeover.sql": "1b8417d0baa7ffd75f858b8ae5e5e4fc",
    "0005_dead_waiters_no_takeover_downgrade.sql": "5d72b60848456c362688d9e09a13d6cf",
    "0006_secret_channels_ownership.sql": "a6ed1ff9bad943fdb9c0e737ec9ffb6a",
    "0006_secret_channels_ownership_downgrade.sql": "b70a802f23515031df9468ab17a3b4e4",
    "0007_dead_waiters_keep_their_place.sql": "b4fd41c2a0e38141a8e31d490e619d37",
    "0007_dead_waiters_keep_their_place_downgrade.sql": "49e603aa1d6c484ca5b0678013eca7f7",
    "0008_liveness_by_backend_owned_leases.sql": "563f7c5c45f336f2265b2246a68698ae",
    "0008_liveness_by_backend_owned_leases_downgrade.sql": "04bdda0f4228673605ed70e8a2ab365e",
    "0009_counters.sql": "d99b8f682b171018658677192076243e",
    "0009_counters_downgrade.sql": "3a17a8b2416c9aae74614513c4a63ca5",
    "0010_rate_grants_recorded.sql": "87e6ca25545fada860f5b68ee83a03f2",
    "0010_rate_grants_recorded_downgrade.sql": "9936182b19a806ba94fcba1ee068f56a",
    "0011_pinned_helpers.sql": "079816525a09b21821e87f887d6e6079",
    "0011_pinned_helpers_downgrade.sql": "8ac973d0d8d6147e795dc88c8ab3fc0c",
    "0012_explain.sql": "87a75c912fff50a593036c49c6f75fd7",
    "0012_explain_downgrade.sql": "325bf3d3b613581cea5609f41df68b02",
    "0013_templates.sql": "81513299adb0b77f5bea64b770722ff9",
    "0013_templates_downgrade.sql": "4c84c48d66914ece2703d9c512200640",
    "0014_template_totals.sql": "7c31628532a82b9ad37ecd80e482d4e4",
    "0014_template_totals_downgrade.sql": "7985c6ebb3b816989a06b93924e0574b",
    "0015_priorities.sql": "cddda8325a7ddd2195aab96f9ad16d75",
    "0015_priorities_downgrade.sql": "3eb469de6c9ceed4549f56730d31bb97",
}


def _has_schema(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regnamespace('pggcl') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _revisions() -> list[str]:
    """The chain's revisions, oldest first."""
    script = ScriptDirectory.from_config(schema.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]


def test_upgrade_downgrade_upgrade(empty_dsn: str) -> None:
    assert schema.current(empty_dsn) is None
    schema.upgrade(empty_dsn)
    assert _has_schema(empty_dsn)
    assert schema.current(empty_dsn) is not None

    schema.downgrade(empty_dsn, "base")
    assert not _has_schema(empty_dsn)
    assert schema.current(empty_dsn) is None

    schema.upgrade(empty_dsn)
    assert _has_schema(empty_dsn)


def test_upgrade_twice_is_a_no_op(empty_dsn: str) -> None:
    schema.upgrade(empty_dsn)
    before = snapshot(empty_dsn)
    schema.upgrade(empty_dsn)
    assert snapshot(empty_dsn) == before


def test_each_downgrade_restores_the_revision_before(empty_dsn: str) -> None:
    revisions = _revisions()
    assert revisions[0] == "0001"
    after: dict[str, dict[str, list[str]]] = {}
    for revision in revisions:
        schema.upgrade(empty_dsn, revision)
        after[revision] = snapshot(empty_dsn)
    for newer, older in reversed(list(zip(revisions[1:], revisions, strict=False))):
        schema.downgrade(empty_dsn, older)
        assert schema.current(empty_dsn) == older
        assert differences(after[older], snapshot(empty_dsn)) == {}, f"downgrade of {newer}"
        schema.upgrade(empty_dsn, newer)
        assert differences(after[newer], snapshot(empty_dsn)) == {}, f"upgrade to {newer}"
        schema.downgrade(empty_dsn, older)


def test_fresh_install_equals_migration_chain(
    empty_dsn: str, pggcl_dsn: str, psql: Callable[..., str]
) -> None:
    # pggcl_dsn was built by the alembic chain (the template); empty_dsn gets the script.
    psql(schema.install_sql(), empty_dsn, "--single-transaction")
    fresh, migrated = snapshot(empty_dsn), snapshot(pggcl_dsn)
    assert fresh["schema"] and fresh["relations"], "the snapshot saw nothing: check the queries"
    assert fresh["functions"] and fresh["roles"], "the snapshot saw nothing: check the queries"
    assert differences(migrated, fresh) == {}, "sql/ differs from the migration chain"
    # The script records the revision: alembic sees the same state, and upgrading is a no-op.
    assert schema.current(empty_dsn) == schema.current(pggcl_dsn) is not None
    schema.upgrade(empty_dsn)
    assert snapshot(empty_dsn) == migrated


# Changes to the fresh-install script that the comparison above must notice, with the kind of
# object each one changes. (Role memberships are cluster-wide, so two databases of one test
# cluster always agree on them; that kind is compared for installs into different clusters.)
_SHA = "SELECT 1885824867 $$"
MUTATIONS = {
    "function body": ("replace", _SHA, "SELECT 1885824867 /* edited */ $$", "functions"),
    "function setting": ("replace", "SET jit = off", "SET jit = on", "functions"),
    "function added setting": (
        "append",
        "ALTER FUNCTION pggcl.reclaim() SET work_mem = '1MB';",
        "",
        "functions",
    ),
    "function grant": (
        "append",
        "REVOKE EXECUTE ON FUNCTION pggcl.reclaim() FROM pggcl_user;",
        "",
        "functions",
    ),
    "function comment": ("append", "COMMENT ON FUNCTION pggcl.reclaim() IS 'x';", "", "functions"),
    "table grant": ("append", "GRANT SELECT ON pggcl.leases TO pggcl_user;", "", "relations"),
    "view comment": ("append", "COMMENT ON VIEW pggcl.holders IS 'x';", "", "relations"),
    "view option": (
        "append",
        "ALTER VIEW pggcl.limits SET (security_barrier = true);",
        "",
        "relations",
    ),
    "view body": ("replace", "AS decaying_slots", "+ 0 AS decaying_slots", "views"),
    "index": ("append", "CREATE INDEX extra_idx ON pggcl.leases (session_id);", "", "indexes"),
    "column default": (
        "append",
        "ALTER TABLE pggcl.sessions ALTER COLUMN grace_seconds SET DEFAULT 5;",
        "",
        "columns",
    ),
    "column type": (
        "replace",
        "holder text,\n    ttl_seconds",
        "holder varchar,\n    ttl_seconds",
        "columns",
    ),
    "constraint": (
        "append",
        "ALTER TABLE pggcl.waiters ADD CONSTRAINT positive CHECK (occupy > 0);",
        "",
        "constraints",
    ),
    "sequence": ("append", "ALTER SEQUENCE pggcl.waiter_id_seq CACHE 10;", "", "sequences"),
    "default privileges": (
        "append",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA pggcl GRANT SELECT ON TABLES TO pggcl_user;",
        "",
        "default_acls",
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=list(MUTATIONS))
def test_the_comparison_fails_when_sql_differs_from_the_chain(
    mutation: str, empty_dsn: str, pggcl_dsn: str, psql: Callable[..., str]
) -> None:
    how, old, new, kind = MUTATIONS[mutation]
    script = schema.install_sql()
    if how == "replace":
        assert script.count(old) >= 1, f"the mutation {mutation!r} no longer applies"
        script = script.replace(old, new, 1)
    else:
        script += "\n" + old + "\n"
    psql(script, empty_dsn, "--single-transaction")
    found = differences(snapshot(pggcl_dsn), snapshot(empty_dsn))
    assert kind in found, f"{mutation}: the snapshot missed it ({sorted(found)})"


def test_released_revisions_are_frozen() -> None:
    versions = schema.alembic_dir() / "versions"
    scripts = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:32] for p in versions.glob("*.sql")
    }
    assert scripts == FROZEN, "a released revision's script changed, or a new one is not listed"
    for module in versions.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        # A revision runs its own frozen script, never the current schema.
        for live in ("sql_files", "sql_dir", "schema_sql", "install_sql"):
            assert live not in text, f"{module.name} reads the live schema ({live})"


def test_schema_sql_is_every_file_in_order() -> None:
    text = schema.schema_sql()
    names = [p.name for p in schema.sql_files()]
    assert names == sorted(names)
    positions = [text.index(f"-- sql/{name}") for name in names]
    assert positions == sorted(positions)


_PLANT = """
CREATE FUNCTION public.evil_plus(a integer, b double precision) RETURNS double precision
LANGUAGE sql AS $$ SELECT a::double precision OPERATOR(pg_catalog.+) b $$;
CREATE OPERATOR public.+ (LEFTARG = integer, RIGHTARG = double precision, FUNCTION = evil_plus);
"""
_FOREIGN = """
SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_depend d
WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
  AND (d.refobjid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'public'::regnamespace)
       OR d.refobjid IN (SELECT oid FROM pg_operator WHERE oprnamespace = 'public'::regnamespace))
"""


@pytest.mark.parametrize("how", ["chain", "script"])
def test_an_install_binds_nothing_planted_on_the_installers_path(
    how: str, empty_dsn: str, psql: Callable[..., str]
) -> None:
    """A view is bound to the operators found when it is created: installing with public (and a
    planted public.+(integer, double precision)) on the path must not bind pggcl.limits to it."""
    psql(_PLANT, empty_dsn)
    if how == "chain":
        schema.upgrade(empty_dsn)
    else:
        psql(schema.install_sql(), empty_dsn, "--single-transaction")
    with psycopg.connect(empty_dsn) as conn:
        assert [r[0] for r in conn.execute(_FOREIGN) if "pggcl" in r[0]] == []
        # The version table went to the installer's own path, as alembic puts it.
        assert conn.execute("SELECT to_regclass('public.pggcl_alembic_version')").fetchone() != (
            None,
        )


def test_upgrading_to_0008_keeps_live_leases_and_waiters(empty_dsn: str) -> None:
    """Revision 0008 on a database in use: a live session's lease, another's queued request and
    a TTL lease taken before it survive the upgrade (their connections stay open throughout),
    and the queue moves on as before."""
    schema.upgrade(empty_dsn, "0007")
    conns = [psycopg.connect(empty_dsn, autocommit=True) for _ in range(3)]
    admin, holder, waiter = conns
    try:
        admin.execute("SELECT pggcl.create_limit('db', 1), pggcl.create_limit('r', 1)")
        channels = []
        for conn in (holder, waiter):
            row = conn.execute("SELECT session_id, channel FROM pggcl.open_session(60)").fetchone()
            assert row is not None
            conn.execute(f'LISTEN "{row[1]}"')
            channels.append(row[0])
        got = holder.execute("SELECT granted, lease_id FROM pggcl.acquire('{db}')").fetchone()
        assert got is not None and got[0]
        lease = got[1]
        queued = waiter.execute("SELECT granted, waiter_id FROM pggcl.acquire('{db}')").fetchone()
        assert queued is not None and not queued[0]
        ttl = admin.execute(
            "SELECT lease_id FROM pggcl.try_acquire('{r}', ttl_seconds => 600)"
        ).fetchone()
        assert ttl is not None

        schema.upgrade(empty_dsn, "0008")
        assert schema.current(empty_dsn) == "0008"

        held = admin.execute("SELECT lease_id FROM pggcl.holders ORDER BY name").fetchall()
        assert [h[0] for h in held] == [lease, ttl[0]]
        assert admin.execute("SELECT waiter_id FROM pggcl.queue").fetchall() == [(queued[1],)]
        assert admin.execute("SELECT pggcl.reclaim()").fetchone() is not None
        alive = "SELECT count(*) FROM pggcl.sessions WHERE dead_since IS NULL AND NOT reclaimed"
        assert admin.execute(alive).fetchone() == (2,)  # both sessions live on
        assert holder.execute("SELECT pggcl.release(%s)", (lease,)).fetchone() == (True,)
        payloads = [n.payload for n in waiter.notifies(timeout=10, stop_after=1)]
        assert payloads == [f"g:{queued[1]}"]
        # A TTL lease from before 0008 has no recorded owner: anyone may act on it, as then.
        assert waiter.execute("SELECT pggcl.release(%s)", (ttl[0],)).fetchone() == (True,)
        assert waiter.execute("SELECT pggcl.release(%s)", (lease,)).fetchone() == (False,)
        assert admin.execute("SELECT count(*) FROM pggcl.leases").fetchone() == (1,)
    finally:
        for conn in conns:
            conn.close()


def test_upgrading_to_0009_keeps_leases_and_waiters_and_counts_from_there(empty_dsn: str) -> None:
    """Revision 0009 on a database in use: a lease and a queued request from before it survive,
    and the counters start at 0 and count what happens after it."""
    schema.upgrade(empty_dsn, "0008")
    conns = [psycopg.connect(empty_dsn, autocommit=True) for _ in range(3)]
    admin, holder, waiter = conns
    try:
        admin.execute("SELECT pggcl.create_limit('db', 1)")
        for conn in (holder, waiter):
            row = conn.execute("SELECT channel FROM pggcl.open_session(60)").fetchone()
            assert row is not None
            conn.execute(f'LISTEN "{row[0]}"')
        got = holder.execute("SELECT lease_id FROM pggcl.acquire('{db}')").fetchone()
        queued = waiter.execute("SELECT waiter_id FROM pggcl.acquire('{db}')").fetchone()
        assert got is not None and queued is not None and queued[0] is not None

        schema.upgrade(empty_dsn, "0009")
        assert schema.current(empty_dsn) == "0009"

        counted = (
            "SELECT grants, enqueued, wait_seconds_count, hold_seconds_count FROM pggcl.limits"
        )
        assert admin.execute(counted).fetchone() == (0, 0, 0, 0)
        assert holder.execute("SELECT pggcl.release(%s)", (got[0],)).fetchone() == (True,)
        payloads = [n.payload for n in waiter.notifies(timeout=10, stop_after=1)]
        assert payloads == [f"g:{queued[0]}"]
        assert admin.execute(counted).fetchone() == (1, 0, 1, 1)
    finally:
        for conn in conns:
            conn.close()


def test_upgrading_to_0015_keeps_the_queue_in_arrival_order(empty_dsn: str) -> None:
    """Revision 0015 (priorities) on a database in use: a live lease and two queued requests
    survive the upgrade, the queue keeps its arrival order, and it moves on as before; a head
    start queued after the upgrade goes before both."""
    schema.upgrade(empty_dsn, "0014")
    conns = [psycopg.connect(empty_dsn, autocommit=True) for _ in range(4)]
    admin, holder, first, second = conns
    try:
        admin.execute("SELECT pggcl.create_limit('db', 1)")
        for conn in (holder, first, second):
            row = conn.execute("SELECT session_id, channel FROM pggcl.open_session(60)").fetchone()
            assert row is not None
            conn.execute(f'LISTEN "{row[1]}"')
        got = holder.execute("SELECT granted, lease_id FROM pggcl.acquire('{db}')").fetchone()
        assert got is not None and got[0]
        waiters = []
        for conn in (first, second):
            queued = conn.execute("SELECT granted, waiter_id FROM pggcl.acquire('{db}')").fetchone()
            assert queued is not None and not queued[0]
            waiters.append(queued[1])

        schema.upgrade(empty_dsn)
        assert schema.current(empty_dsn) == "0015"

        order = "SELECT waiter_id, priority FROM pggcl.queue ORDER BY position"
        assert admin.execute(order).fetchall() == [(waiters[0], 0.0), (waiters[1], 0.0)]
        urgent = admin.execute(
            "SELECT waiter_id FROM pggcl.acquire('{db}', ttl_seconds => 60, priority => 60)"
        ).fetchone()
        assert urgent is not None
        assert [w for w, _ in admin.execute(order).fetchall()] == [urgent[0], *waiters]
        assert admin.execute("SELECT pggcl.cancel(%s)", (urgent[0],)).fetchone() == ("cancelled",)
        assert holder.execute("SELECT pggcl.release(%s)", (got[1],)).fetchone() == (True,)
        payloads = [n.payload for n in first.notifies(timeout=10, stop_after=1)]
        assert payloads == [f"g:{waiters[0]}"]
        assert admin.execute(order).fetchall() == [(waiters[1], 0.0)]
    finally:
        for conn in conns:
            conn.close()
