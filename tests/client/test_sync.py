"""The sync client against a real server, with real threads."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid

import pytest

import pggcl
from pggcl.sync import Client
from tests.client.conftest import max_overlap, sql, terminate_session_connection, wait_until


def test_manage_limits(client: Client) -> None:
    created = client.create_limit("database", limit=5)
    assert (created.name, created.limit, created.active, created.active_slots) == (
        "database",
        5,
        True,
        0,
    )
    client.create_limit("api", limit=2, slot_decay_per_second=0.5, active=False)
    assert [lim.name for lim in client.list_limits()] == ["api", "database"]
    assert client.read_limit("api").slot_decay_per_second == 0.5
    updated = client.update_limit("api", limit=3, active=True, new_name="api2")
    assert (updated.name, updated.limit, updated.active) == ("api2", 3, True)
    with pytest.raises(pggcl.LimitNotFoundError, match="'api'"):
        client.read_limit("api")
    with pytest.raises(pggcl.LimitExistsError, match="'database'"):
        client.create_limit("database", limit=1)
    with pytest.raises(pggcl.ValidationError, match="-1"):
        client.create_limit("bad", limit=-1)
    with pytest.raises(pggcl.ValidationError, match="a/b"):
        client.create_limit("a/b", limit=1)
    assert client.delete_limit("api2") is True
    assert client.delete_limit("api2") is False
    assert [lim.name for lim in client.list_limits()] == ["database"]


def test_hold_shows_in_holders_and_is_released(client: Client) -> None:
    client.create_limit("db", 2)
    with client.concurrency("db", occupy=2, holder="me") as grant:
        (held,) = client.holders("db")
        assert (held.lease_id, held.slots, held.holder) == (grant.lease_id, 2, "me")
        assert client.read_limit("db").active_slots == 2
    assert client.holders() == []
    assert client.read_limit("db").active_slots == 0


def test_uncontended_path_is_one_round_trip_each_way(client: Client) -> None:
    client.create_limit("db", 1)
    client._session_id()
    before = client.stats.calls
    with client.concurrency("db"):
        assert client.stats.calls == before + 1
    assert client.stats.calls == before + 2


def test_empty_names_do_nothing(client: Client) -> None:
    with client.concurrency([]):
        client.rate_limit([])
    assert client.stats.calls == 0


def test_max_overlap_of_16_threads_never_exceeds_the_limit(client: Client) -> None:
    client.create_limit("db", 3)
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()
    entries = 0
    full = threading.Event()  # the first 3 holders stay until all 3 are in: the peak is reached

    def worker() -> None:
        nonlocal entries
        for _ in range(5):
            with client.concurrency("db"):
                start = time.monotonic()
                with lock:
                    entries += 1
                    first_wave = entries <= 3
                    if entries == 3:
                        full.set()
                if first_wave:
                    assert full.wait(10), "the limit of 3 was never reached"
                time.sleep(0.005)
                end = time.monotonic()
            with lock:
                intervals.append((start, end))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(intervals) == 80
    assert max_overlap(intervals) == 3
    assert client.stats.connects == 1  # one session connection for all 16 threads


def test_hand_off_is_a_notification_not_a_poll(pggcl_dsn: str, client: Client) -> None:
    client.create_limit("db", 1)
    got_it = threading.Event()
    with Client(pggcl_dsn) as other:
        with client.concurrency("db"):

            def wait() -> None:
                with other.concurrency("db"):
                    got_it.set()

            t = threading.Thread(target=wait)
            t.start()
            wait_until(lambda: len(client.queue("db")) == 1, "the waiter is queued")
            assert not got_it.is_set()
        t.join()
        assert got_it.is_set()
        # take (refused), acquire (queued), release: nothing ran in between; the grant came by
        # NOTIFY.
        assert (other.stats.calls, other.stats.notifications) == (3, 1)


def test_a_limit_that_made_us_queue_skips_the_fast_path(client: Client) -> None:
    """pggcl.take is refused wherever requests queue: after one request queued, the next on
    that limit goes straight to pggcl.acquire; a request granted at once brings take back."""
    client.create_limit("db", 1)
    costs = []
    with client.concurrency("db"):
        for _ in range(2):
            before = client.stats.calls
            with (
                pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError),
                client.concurrency("db", timeout_seconds=0.05),
            ):
                pass
            costs.append(client.stats.calls - before)
    assert costs == [3, 2]  # take, acquire (queued), cancel; then acquire, cancel
    assert not client._contention.worth_taking("db")
    with client.concurrency("db"):  # acquire, granted at once
        pass
    assert client._contention.worth_taking("db")


def test_timeout_leaves_nothing_queued(client: Client) -> None:
    client.create_limit("db", 1)
    with (
        client.concurrency("db"),
        pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError, match="'db'"),
    ):
        with client.concurrency("db", timeout_seconds=0.05):
            pass
        assert client.queue() == []
        calls = client.stats.calls
        # timeout 0: one try, no queueing
        with pytest.raises(TimeoutError), client.concurrency("db", timeout_seconds=0):
            pass
        assert client.stats.calls == calls + 1
    assert len(client.holders()) == 0


def test_a_timeout_beyond_what_the_platform_can_sleep_still_waits(client: Client) -> None:
    """A finite timeout past threading.TIMEOUT_MAX (about 292 years) is no error."""
    client.create_limit("db", 1)
    outcome: list[object] = []
    with client.concurrency("db"):

        def wait() -> None:
            try:
                with client.concurrency("db", timeout_seconds=1e12):
                    outcome.append("held")
            except Exception as exc:  # reported below
                outcome.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        wait_until(lambda: len(client.queue("db")) == 1, "the waiter is queued")
    t.join(10)
    assert outcome == ["held"]


def test_strict_raises_and_creates_nothing(client: Client) -> None:
    with (
        pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="'nope'"),
        client.concurrency("nope", strict=True),
    ):
        pass
    assert client.list_limits() == []


def test_missing_limit_is_created_inactive_with_a_warning(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="pggcl"),
        client.concurrency("fresh"),
        client.concurrency("fresh"),
    ):
        pass
    assert "'fresh'" in caplog.text
    assert client.read_limit("fresh").active is False


def test_inactive_limits_never_block(client: Client) -> None:
    client.create_limit("off", 1, active=False)
    with client.concurrency("off"), client.concurrency("off", timeout_seconds=0):
        client.rate_limit("off", occupy=1, timeout_seconds=0)


def test_occupy_above_the_limit_is_refused(client: Client) -> None:
    client.create_limit("db", 2)
    with (
        pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="3 slots on limit 'db'"),
        client.concurrency("db", occupy=3),
    ):
        pass
    with (
        pytest.raises(pggcl.ValidationError, match="occupy: 0"),
        client.concurrency("db", occupy=0),
    ):
        pass


def test_multi_name_requests_are_all_or_nothing(client: Client) -> None:
    client.create_limit("a", 1)
    client.create_limit("b", 1)
    done = threading.Event()
    with client.concurrency("b"):

        def both() -> None:
            with client.concurrency(["a", "b"]):
                assert {h.name for h in client.holders()} == {"a", "b"}
                done.set()

        t = threading.Thread(target=both)
        t.start()
        wait_until(lambda: len(client.queue()) == 2, "the request is queued on a and b")
        assert client.read_limit("a").active_slots == 0  # nothing taken on a meanwhile
    t.join()
    assert done.is_set()
    assert client.holders() == []


def test_the_body_exception_propagates_and_the_slot_is_released(client: Client) -> None:
    client.create_limit("db", 1)
    with pytest.raises(ZeroDivisionError), client.concurrency("db"):
        raise ZeroDivisionError
    assert client.holders() == []


def _interrupt_main_when(predicate: object) -> threading.Thread:
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def fire() -> None:
        wait_until(predicate, "the main thread is ready to be interrupted")  # type: ignore[arg-type]
        signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=fire)
    t.start()
    return t


def test_keyboard_interrupt_while_waiting_leaves_nothing_behind(client: Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db"):
        t = _interrupt_main_when(lambda: len(client.queue("db")) == 1)
        with pytest.raises(KeyboardInterrupt), client.concurrency("db"):
            pass
        t.join()
        assert client.queue() == []
        assert len(client.holders()) == 1
    assert client.holders() == []


def test_keyboard_interrupt_while_holding_releases(client: Client) -> None:
    client.create_limit("db", 1)
    holding = threading.Event()
    t = _interrupt_main_when(holding.is_set)
    with pytest.raises(KeyboardInterrupt), client.concurrency("db"):
        holding.set()
        threading.Event().wait(10)
    t.join()
    assert client.holders() == []


def test_rate_limit_waits_exactly_as_told(client: Client) -> None:
    client.create_limit("api", 1, slot_decay_per_second=5.0)
    calls = client.stats.calls
    for _ in range(4):
        client.rate_limit("api")
    # 1 immediate grant, then for each of the 3 others: acquire (queued with retry_after),
    # sleep retry_after, one recheck that grants.
    assert client.stats.calls == calls + 1 + 3 * 2
    assert client.stats.heartbeats == 0


def test_rate_limit_needs_a_decay(client: Client) -> None:
    client.create_limit("db", 1)
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="slot_decay_per_second"):
        client.rate_limit("db")


def test_rate_limit_timeout(client: Client) -> None:
    client.create_limit("api", 1, slot_decay_per_second=0.01)
    client.rate_limit("api")
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError):
        client.rate_limit("api", timeout_seconds=0.05)
    assert client.queue() == []


def test_lowering_a_limit_rejects_a_waiter_that_can_never_fit(client: Client) -> None:
    client.create_limit("db", 3)
    errors: list[BaseException] = []
    with client.concurrency("db", occupy=2):

        def big() -> None:
            try:
                with client.concurrency("db", occupy=3):
                    pass
            except pggcl.PggclError as exc:
                errors.append(exc)

        t = threading.Thread(target=big)
        t.start()
        wait_until(lambda: len(client.queue()) == 1, "the big request is queued")
        client.update_limit("db", limit=2)
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], pggcl.ConcurrencySlotAcquisitionError)
    assert "'db'" in str(errors[0])


def test_session_reconnects_and_keeps_its_leases(pggcl_dsn: str, client: Client) -> None:
    client.create_limit("db", 1)
    got_it = threading.Event()
    with client.concurrency("db") as grant:

        def wait() -> None:
            with client.concurrency("db"):
                got_it.set()

        t = threading.Thread(target=wait)
        t.start()
        wait_until(lambda: len(client.queue("db")) == 1, "the waiter is queued")
        generation = client._wait_listening(0)
        terminate_session_connection(pggcl_dsn, client._session_id())
        client._wait_listening(generation)
        assert [h.lease_id for h in client.holders("db")] == [grant.lease_id]
        assert len(client.queue("db")) == 1
    t.join()
    assert got_it.is_set()
    assert (client.stats.reconnects, client.stats.sessions_opened) == (1, 1)


def test_a_lost_database_says_it_is_unreachable() -> None:
    with (
        Client("postgresql://nobody@127.0.0.1:1/x", connect_timeout=1) as c,
        pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"),
    ):
        c.list_limits()
        with (
            pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"),
            c.concurrency("db"),
        ):
            pass


def test_close_releases_what_the_session_held(pggcl_dsn: str) -> None:
    c = Client(pggcl_dsn)
    c.create_limit("db", 1)
    held = c.concurrency("db")
    held.__enter__()
    c.close()
    assert sql(pggcl_dsn, "SELECT count(*) FROM pggcl.leases") == [(0,)]


def test_release_by_id(client: Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db") as grant:
        assert grant.lease_id is not None
        assert client.release(grant.lease_id) is True
        assert client.release(uuid.uuid4()) is False


def test_a_reclaimed_session_requeues_its_waiters_and_logs_for_holders(
    pggcl_dsn: str, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Cut off for longer than its grace, a client loses its leases (holders are told in the
    # log) but its waiters queue again under its new session and are served in turn.
    client.create_limit("held", 1)
    client.create_limit("busy", 1)
    errors: list[BaseException] = []
    served = threading.Event()
    other = Client(pggcl_dsn)
    busy = other.concurrency("busy")
    busy.__enter__()
    with client.concurrency("held"):

        def wait() -> None:
            try:
                with client.concurrency("busy", timeout_seconds=60):
                    served.set()
            except pggcl.PggclError as exc:
                errors.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        wait_until(lambda: len(client.queue("busy")) == 1, "the waiter is queued")
        session_id = client._session_id()
        token = client._port.session._session[1]  # type: ignore[index]
        generation = client._wait_listening(0)
        with caplog.at_level(logging.WARNING, logger="pggcl"):
            ((pid,),) = sql(
                pggcl_dsn, "SELECT backend_pid FROM pggcl.sessions WHERE id = %s", session_id
            )
            sql(pggcl_dsn, "SELECT pggcl.close_session(%s, %s)", session_id, token)
            sql(pggcl_dsn, "SELECT pg_terminate_backend(%s)", pid)
            client._wait_listening(generation)
            wait_until(
                lambda: [w.session_id for w in client.queue("busy")] == [client._session_id()],
                "the waiter is queued again under the new session",
            )
    assert not served.is_set()
    busy.__exit__(None, None, None)
    t.join()
    other.close()
    assert served.is_set() and errors == []
    assert "1 lease(s)" in caplog.text and "queueing again" in caplog.text
    assert client.stats.sessions_opened == 2


def test_the_heartbeat_reclaims_a_dead_holder_for_a_waiter(pggcl_dsn: str) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    holding = ctx.Event()

    def hold() -> None:
        c = Client(pggcl_dsn, grace_seconds=0.0)
        held = c.concurrency("db")
        held.__enter__()
        holding.set()
        threading.Event().wait(60)

    with Client(pggcl_dsn, heartbeat_seconds=0.1) as c:
        c.create_limit("db", 1)
        proc = ctx.Process(target=hold)
        proc.start()
        assert holding.wait(30)
        got_it = threading.Event()

        def wait() -> None:
            with c.concurrency("db"):
                got_it.set()

        t = threading.Thread(target=wait)
        t.start()
        wait_until(lambda: len(c.queue("db")) == 1, "the waiter is queued")
        proc.kill()
        proc.join()
        t.join(30)
        assert got_it.is_set()
        assert c.stats.heartbeats >= 1
