"""`pggcl metrics --port N`: the Prometheus exporter without the UI, through its console script."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

import pggcl
from tests.cli.conftest import PGGCL, assert_one_line_error, cli, env_with


@contextlib.contextmanager
def exporter(dsn: str, *args: str) -> Iterator[str]:
    """`pggcl metrics --port 0 ARGS` running; yields its address once it says it serves (its
    first line on stderr), and stops it with Ctrl-C (SIGINT), which must end it cleanly."""
    proc = subprocess.Popen(
        [str(PGGCL), "metrics", "--port", "0", *args],
        env=env_with(dsn),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("pggcl metrics: serving http://127.0.0.1:"), line
        yield line.split("serving ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err


def get(url: str, **headers: str) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read().decode()


def test_the_exporter_serves_the_counters(pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("db", 2)
        for _ in range(3):
            with client.concurrency("db"):
                pass
        with exporter(pggcl_dsn) as url:
            status, content_type, text = get(url)
            assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
            samples = {
                (s.name, s.labels.get("le")): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            assert samples[("pggcl_limit", None)] == 2
            assert samples[("pggcl_grants_total", None)] == 3
            assert samples[("pggcl_hold_seconds_count", None)] == 3
            assert samples[("pggcl_wait_seconds_bucket", "+Inf")] == 3
            # Read fresh at each scrape.
            with client.concurrency("db"):
                pass
            assert 'pggcl_grants_total{name="db"} 4\n' in get(url)[2]
            # The UI's rules: only /metrics, and only loopback host names without a token.
            assert get(url.replace("/metrics", "/"))[0] == 404
            assert get(url, Host="attacker.example")[0] == 421


def test_with_a_token_every_scrape_carries_it(pggcl_dsn: str) -> None:
    with exporter(pggcl_dsn, "--token", "s3cret") as url:
        assert get(url)[0] == 401
        assert get(url, Authorization="Bearer wrong")[0] == 401
        assert get(url, Authorization="Bearer s3cret", Host="metrics.example")[0] == 200


def test_it_refuses_to_listen_beyond_loopback_without_a_token(shared_dsn: str) -> None:
    result = cli("metrics", "--port", "0", "--host", "0.0.0.0", dsn=shared_dsn)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--token")


def test_a_database_without_pggcl_is_an_error_at_once(shared_empty_dsn: str) -> None:
    result = cli("metrics", "--port", "0", dsn=shared_empty_dsn)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "pggcl db upgrade")


def test_the_exporter_serves_template_totals_and_only_the_busiest_instances(
    pggcl_dsn: str,
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("tenant:*", 1)
        for i in range(25):
            with client.concurrency(f"tenant:{i}"):
                pass
        with exporter(pggcl_dsn) as url:
            status, _, text = get(url)
    assert status == 200
    found = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    instances = {labels["name"] for name, labels, _ in found if name == "pggcl_limit"}
    assert len(instances) == 10  # pggcl.prometheus.BUSIEST, of 25
    totals = {name: v for name, labels, v in found if labels == {"template": "tenant:*"}}
    assert totals["pggcl_template_instances"] == 25
    assert totals["pggcl_template_grants_total"] == 25
