"""Template totals (issues #15 and #16.2, revision 0014): pggcl.template_totals gives every
template its instances taken together, and what a swept instance had counted stays in its
template's totals, so that they only grow (Prometheus counters never go down)."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg

from tests.sql.conftest import Connect
from tests.sql.helpers import acquire, limit, one, open_session, release, try_acquire, value

Conn = psycopg.Connection[Any]

COUNTERS = (
    "grants", "enqueued", "denied", "gave_up", "rejected", "reclaimed_slots",
    "wait_seconds_count", "wait_seconds_sum", "wait_seconds_buckets", "hold_seconds_count",
    "hold_seconds_sum", "hold_seconds_buckets",
)  # fmt: skip


def totals(db: Conn, name: str) -> dict[str, Any]:
    return one(db, "SELECT * FROM pggcl.template_totals WHERE name = %s", name)


def summed(db: Conn, template: str) -> dict[str, Any]:
    """The counters of the instances of `template` that exist, summed here, in Python."""
    rows = [
        one(db, "SELECT * FROM pggcl.limits WHERE name = %s", r[0])
        for r in db.execute("SELECT name FROM pggcl.limits WHERE template = %s", (template,))
    ]
    out: dict[str, Any] = {}
    for key in COUNTERS:
        if key.endswith("_buckets"):
            out[key] = [sum(col) for col in zip(*(r[key] for r in rows), strict=True)] or [0] * 12
        else:
            out[key] = sum(r[key] for r in rows)
    return out


def close(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(
        abs(a[k] - b[k]) < 1e-9 if isinstance(a[k], float) else a[k] == b[k] for k in COUNTERS
    )


def sweep_until_gone(db: Conn, template: str) -> None:
    for _ in range(50):
        value(db, "SELECT pggcl.reclaim()")
        if not value(db, "SELECT count(*) FROM pggcl.limits WHERE template = %s", template):
            return
        db.execute("SELECT pg_sleep(0.06)")  # the idle time itself is what makes them go
    raise AssertionError("the instances were never swept")


def use(db: Conn, name: str) -> int:
    """Take leases on `name` until refused once, then release them: how many were granted."""
    leases = []
    while (answer := try_acquire(db, [name], ttl_seconds=60))["granted"]:
        leases.append(answer["lease_id"])
    for lease in leases:
        assert release(db, lease)
    return len(leases)


def test_a_template_with_no_instances_has_zero_totals(db: Conn) -> None:
    value(db, "SELECT name FROM pggcl.create_limit('tenant:*', 2, idle_seconds => 60)")
    row = totals(db, "tenant:*")
    assert (row["limit"], row["active"], row["instances"], row["retired_instances"]) == (
        2, True, 0, 0
    )  # fmt: skip
    assert (row["held_slots"], row["decaying_slots"], row["active_slots"], row["waiting"]) == (
        0, 0, 0, 0
    )  # fmt: skip
    assert row["grants"] == row["hold_seconds_count"] == 0
    assert row["wait_seconds_buckets"] == row["hold_seconds_buckets"] == [0] * 12


def test_totals_are_the_sum_over_the_instances_and_the_occupancy_now(connect: Connect) -> None:
    db = connect()
    value(db, "SELECT name FROM pggcl.create_limit('tenant:*', 2, idle_seconds => 60)")
    value(db, "SELECT name FROM pggcl.create_limit('other:*', 5)")
    use(db, "tenant:a")
    use(db, "tenant:b")
    held = try_acquire(db, ["tenant:b"], ttl_seconds=60)["lease_id"]
    try_acquire(db, ["tenant:c"], ttl_seconds=60)
    try_acquire(db, ["tenant:c"], ttl_seconds=60)
    waiter = connect()
    open_session(waiter)
    assert acquire(waiter, ["tenant:c"], ttl_seconds=60)["waiter_id"] is not None  # queued
    try_acquire(db, ["other:x"], ttl_seconds=60)

    row = totals(db, "tenant:*")
    assert row["instances"] == 3
    assert (row["held_slots"], row["active_slots"], row["waiting"]) == (3, 3.0, 1)
    assert close(row, summed(db, "tenant:*")), (row, summed(db, "tenant:*"))
    assert row["grants"] == 7 and row["denied"] == 2 and row["enqueued"] == 1
    assert row["wait_seconds_buckets"][-1] == row["wait_seconds_count"] == 7
    assert row["hold_seconds_buckets"][-1] == row["hold_seconds_count"] == 4
    assert totals(db, "other:*")["grants"] == 1  # each template counts its own
    assert release(db, held)


def test_a_swept_instances_counters_stay_in_its_templates_totals(db: Conn) -> None:
    value(db, "SELECT name FROM pggcl.create_limit('tenant:*', 2, idle_seconds => 0.05)")
    use(db, "tenant:a")
    use(db, "tenant:b")
    before = totals(db, "tenant:*")
    assert close(before, summed(db, "tenant:*"))
    assert before["grants"] == 4 and before["hold_seconds_count"] == 4

    sweep_until_gone(db, "tenant:*")
    after = totals(db, "tenant:*")
    assert (after["instances"], after["retired_instances"]) == (0, 2)
    assert close(after, before), (after, before)  # nothing lost with the rows

    # New instances add to what the swept ones left.
    use(db, "tenant:a")
    again = totals(db, "tenant:*")
    assert again["instances"] == 1
    assert again["grants"] == 6 and again["denied"] == 3 and again["hold_seconds_count"] == 6
    assert again["hold_seconds_sum"] >= before["hold_seconds_sum"]
    pairs = zip(again["hold_seconds_buckets"], before["hold_seconds_buckets"], strict=True)
    assert all(n >= m for n, m in pairs)


def test_totals_only_grow_while_instances_come_and_go(db: Conn) -> None:
    value(db, "SELECT name FROM pggcl.create_limit('k:*', 1, idle_seconds => 0.05)")
    seen: list[dict[str, Any]] = []
    for round_ in range(4):
        for i in range(3):
            use(db, f"k:{round_}-{i}")
        seen.append(totals(db, "k:*"))
        sweep_until_gone(db, "k:*")
        seen.append(totals(db, "k:*"))
    for earlier, later in itertools.pairwise(seen):
        for key in COUNTERS:
            if key.endswith("_buckets"):
                assert all(b >= a for a, b in zip(earlier[key], later[key], strict=True)), key
            else:
                assert later[key] >= earlier[key], key
    assert seen[-1]["grants"] == 12 and seen[-1]["retired_instances"] == 12


def test_reading_totals_takes_no_lock_an_acquire_waits_for(connect: Connect) -> None:
    db, reader = connect(), connect()
    value(db, "SELECT name FROM pggcl.create_limit('tenant:*', 2, idle_seconds => 60)")
    use(db, "tenant:a")
    with reader.transaction():
        assert totals(reader, "tenant:*")["grants"] == 2
        db.execute("SET lock_timeout = '2s'")
        assert try_acquire(db, ["tenant:a"], ttl_seconds=60)["granted"]  # same instance
        assert try_acquire(db, ["tenant:new"], ttl_seconds=60)["granted"]  # a new one
    assert limit(db, "tenant:new")["template"] == "tenant:*"


def test_the_totals_are_for_users_and_the_retired_columns_private(db: Conn) -> None:
    assert value(db, "SELECT has_table_privilege('pggcl_user', 'pggcl.template_totals', 'SELECT')")
    assert not value(db, "SELECT has_table_privilege('public', 'pggcl.template_totals', 'SELECT')")
    assert not value(
        db, "SELECT has_table_privilege('pggcl_user', 'pggcl.limit_templates', 'SELECT')"
    )


def test_the_sums_of_seconds_move_to_the_retired_ones_exactly(db: Conn) -> None:
    # Sums that floats add differently in different orders (1e16 + 1 rounds back to 1e16):
    # the total must stay the same when instances move from the live sum to the retired one,
    # or it could go down, which Prometheus reads as a counter reset.
    value(db, "SELECT name FROM pggcl.create_limit('k:*', 1, idle_seconds => 0.05)")
    for name in ("k:c", "k:busy", "k:b"):
        use(db, name)
    lease = try_acquire(db, ["k:busy"], ttl_seconds=60)["lease_id"]
    for name, seconds in (("k:c", 1.0), ("k:busy", 1.0), ("k:b", 1e16)):
        db.execute(
            "UPDATE pggcl.limit_state SET hold_seconds_sum = %s WHERE name = %s", (seconds, name)
        )
    before = totals(db, "k:*")["hold_seconds_sum"]
    assert before == 1e16 + 2
    for _ in range(50):
        value(db, "SELECT pggcl.reclaim()")
        if totals(db, "k:*")["instances"] == 1:
            break
        db.execute("SELECT pg_sleep(0.06)")
    after = totals(db, "k:*")
    assert (after["instances"], after["retired_instances"]) == (1, 2)
    assert after["hold_seconds_sum"] == before
    assert release(db, lease)
