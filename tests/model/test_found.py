"""What the model-based test found the engine doing against its rules: each a minimal
example; fixed by revision 0007, kept as regression tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.model.test_model import EngineMachine

Conn = psycopg.Connection[Any]


@pytest.fixture
def conns(pggcl_dsn: str) -> Iterator[list[tuple[Conn, int]]]:
    """Three client sessions (grace 0), each LISTENing on its channel; plus the superuser."""
    opened = []
    for _ in range(3):
        conn = psycopg.connect(pggcl_dsn, autocommit=True)
        row = conn.execute("SELECT session_id, channel FROM pggcl.open_session(0)").fetchone()
        assert row is not None
        conn.execute(f'LISTEN "{row[1]}"')
        opened.append((conn, int(row[0])))
    yield opened
    for conn, _ in opened:
        conn.close()


def test_delete_limit_lets_every_waiter_on_it_alone_go_ahead(
    pggcl_dsn: str, conns: list[tuple[Conn, int]]
) -> None:
    (holder, hs), (w1, s1), (w2, s2) = conns
    with psycopg.connect(pggcl_dsn, autocommit=True) as admin:
        admin.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 1)")
        assert holder.execute(
            "SELECT granted FROM pggcl.acquire('{b}', session_id => %s)", (hs,)
        ).fetchone() == (True,)
        # W1 waits on a and b (b is full); W2 on a alone queues behind it.
        q = "SELECT granted, lease_id, waiter_id FROM pggcl.acquire(%s::text[], session_id => %s)"
        r1 = w1.execute(q, (["a", "b"], s1)).fetchone()
        r2 = w2.execute(q, (["a"], s2)).fetchone()
        assert r1 is not None and r2 is not None and not r1[0] and not r2[0]
        assert admin.execute("SELECT pggcl.delete_limit('a')").fetchone() == (True,)
    # The protocol: on `r:` call recheck. W2 waited only for `a`, which is gone: it goes ahead.
    notes = [n.payload for n in w2.notifies(timeout=2, stop_after=1)]
    if notes == [f"r:{r2[2]}"]:
        status = w2.execute("SELECT status FROM pggcl.recheck(%s, %s)", (r2[2], r2[1])).fetchone()
        assert status == ("granted",), f"W2's request: {status}"  # observed: ('gone',)
    else:
        assert notes == [f"g:{r2[2]}"], notes


def test_the_model_finds_the_dropped_waiter(pggcl_dsn: str) -> None:
    """The steps of the example above, replayed through the state machine."""
    EngineMachine.dsn = pggcl_dsn
    state = EngineMachine()
    try:
        state.start(limits=[1, 1, 1], decays=[0.0, 0.0, 0.0], active=[True, True, True])
        state.acquire_one_and_wait(pick=0, name="b", occupy=1)
        state.acquire_and_wait(pick=1, names=["a", "b"], occupy=1, ttl=False)
        state.acquire_one_and_wait(pick=2, name="a", occupy=1)
        state.engine_equals_model()
        state.delete_limit(name="a", again=None)
        state.engine_equals_model()
    finally:
        state.teardown()
