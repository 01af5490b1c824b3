"""The UI over HTTP without a browser: metrics, the front door, CSRF, the read-only role."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import psycopg.conninfo
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import pggcl
from pggcl.cli import main
from pggcl.ui import create_app
from pggcl.ui.metrics import exposition

BASE = "http://127.0.0.1:8787"


@pytest.fixture
def http(pggcl_dsn: str) -> Iterator[TestClient]:
    with TestClient(create_app(pggcl_dsn), base_url=BASE, follow_redirects=False) as client:
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the page has no form token"
    return found.group(1)


def names(dsn: str) -> list[str]:
    with pggcl.Client(dsn) as client:
        return [limit.name for limit in client.list_limits()]


def test_metrics_in_prometheus_text_format(http: TestClient, pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("database", 5)
        client.create_limit('odd "name" \\ here', 2, active=False)
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = response.text.splitlines()
    for metric in ("pggcl_limit", "pggcl_active_slots", "pggcl_waiting", "pggcl_active"):
        assert f"# TYPE {metric} gauge" in lines
    assert 'pggcl_limit{name="database"} 5' in lines
    assert 'pggcl_active_slots{name="database"} 0.0' in lines
    assert 'pggcl_waiting{name="database"} 0' in lines
    assert 'pggcl_active{name="database"} 1' in lines
    assert 'pggcl_active{name="odd \\"name\\" \\\\ here"} 0' in lines


def test_metrics_of_no_limits_are_only_headers() -> None:
    assert all(line.startswith("#") for line in exposition([]).splitlines())


def test_only_loopback_host_names_without_a_token(http: TestClient) -> None:
    assert http.get("/").status_code == 200
    assert http.get("/", headers={"host": "localhost:8787"}).status_code == 200
    refused = http.get("/", headers={"host": "attacker.example:8787"})
    assert refused.status_code == 421
    assert "loopback" in refused.text


def test_with_a_token_every_request_carries_it(pggcl_dsn: str) -> None:
    app = create_app(pggcl_dsn, token="s3cret", hosts=None)
    with TestClient(app, base_url="http://ui.example", follow_redirects=False) as http:
        for path in ("/", "/metrics", "/events", "/static/pggcl.css", "/limit?name=x"):
            assert http.get(path).status_code == 401, path
        assert http.get("/?token=wrong").status_code == 401
        assert http.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/metrics", headers={"authorization": "Bearer s3cret"}).status_code == 200
        # The token in the address is traded for a cookie, and leaves the address bar.
        opened = http.get("/?q=db&token=s3cret")
        assert opened.status_code == 303
        assert opened.headers["location"] == "/?q=db"
        assert "s3cret" not in opened.headers["set-cookie"]
        assert http.get("/").status_code == 200  # the client now sends the cookie


def test_changes_need_the_form_token_and_the_same_origin(http: TestClient, pggcl_dsn: str) -> None:
    token = csrf_of(http.get("/limits/new").text)
    form = {"name": "database", "limit": "5", "slot_decay_per_second": "0", "active": "on"}
    assert http.post("/limits/new", data=form).status_code == 403  # no token
    assert http.post("/limits/new", data={**form, "csrf": "0" * 64}).status_code == 403
    cross = http.post(
        "/limits/new", data={**form, "csrf": token}, headers={"origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    cross_site = http.post(
        "/limits/new", data={**form, "csrf": token}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross_site.status_code == 403
    assert names(pggcl_dsn) == []
    created = http.post("/limits/new", data={**form, "csrf": token})
    assert created.status_code == 303
    assert created.headers["location"] == "/limit?name=database&done=created"
    assert names(pggcl_dsn) == ["database"]


def test_edit_renames_and_puts_each_error_next_to_its_field(
    http: TestClient, pggcl_dsn: str
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("database", 5)
    token = csrf_of(http.get("/limit/edit?name=database").text)
    form = {"csrf": token, "name": "database", "limit": "5", "active": "on"}
    # The form's own checks (text to numbers) and the engine's refusals alike, next to the field:
    # the engine's error names its parameter (exc.field; a new name is update_limit's new_name).
    for field, value, message in (
        ("slot_decay_per_second", "-1", "it must be a finite number, 0 or more"),
        ("slot_decay_per_second", "inf", "must be a finite number"),
        ("limit", "", "must be a whole number of slots, 0 or more; got nothing"),
        ("limit", str(2**31), "at most 2147483647 slots"),
        ("name", "", "it must not be empty"),
        ("name", "a>b", "must not contain any of"),
    ):
        refused = http.post("/limit/edit?name=database", data={**form, field: value})
        assert refused.status_code == 422, (field, value)
        error = re.search(rf'id="f-{field}-error">([^<]*)<', refused.text)
        assert error and message in error.group(1).replace("&gt;", ">"), (field, value)
        assert refused.text.count('class="field-error"') == 1, (field, value)
        assert 'id="form-error"' not in refused.text
    with pggcl.Client(pggcl_dsn) as client:
        assert client.read_limit("database").slot_decay_per_second == 0
    renamed = http.post("/limit/edit?name=database", data={**form, "name": "primary-db"})
    assert renamed.status_code == 303
    assert renamed.headers["location"] == "/limit?name=primary-db&done=updated"
    assert names(pggcl_dsn) == ["primary-db"]


def test_pages_send_headers_that_keep_them_from_being_framed(http: TestClient) -> None:
    headers = http.get("/").headers
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "SameSite=Strict" in headers["set-cookie"]


def test_filter_by_name_and_missing_limit(http: TestClient, pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        for name in ("database", "Replica-DATABASE", "gpu"):
            client.create_limit(name, 1)
    page = http.get("/?q=Data").text
    shown = re.findall(r"<tr data-name=\"([^\"]+)\"", page)
    assert sorted(shown) == sorted(["Replica-DATABASE", "database"])
    assert http.get("/limit?name=nope").status_code == 404


@pytest.fixture
def user_dsn(pggcl_role_dsn: Callable[[str], str]) -> Callable[[str], str]:
    """Make a login role in the given pggcl role; returns its DSN."""
    return pggcl_role_dsn


def test_a_pggcl_user_dsn_gives_a_read_only_ui_that_says_so(
    pggcl_dsn: str, user_dsn: Callable[[str], str]
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("database", 5)
    dsn = user_dsn("pggcl_user")
    with TestClient(create_app(dsn), base_url=BASE, follow_redirects=False) as http:
        page = http.get("/").text
        assert "Read-only" in page
        assert "New limit" not in page and "Deactivate" not in page and "Delete" not in page
        limit_page = http.get("/limit?name=database").text
        assert "Release" not in limit_page and "Edit" not in limit_page
        token = csrf_of(http.get("/limits/new").text)
        for path, form in (
            ("/limits/new", {"name": "x", "limit": "1"}),
            ("/limit/active", {"name": "database", "active": "false"}),
            ("/limit/delete?name=database", {}),
        ):
            refused = http.post(path, data={**form, "csrf": token})
            assert refused.status_code == 403, path
            assert "read-only" in refused.text
    with pggcl.Client(pggcl_dsn) as client:
        assert [(lim.name, lim.active) for lim in client.list_limits()] == [("database", True)]


def test_an_admin_dsn_may_manage(pggcl_dsn: str, user_dsn: Callable[[str], str]) -> None:
    dsn = user_dsn("pggcl_admin")
    with TestClient(create_app(dsn), base_url=BASE) as http:
        page = http.get("/").text
        assert "Read-only" not in page and "New limit" in page


def test_the_command_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    result = CliRunner().invoke(
        main, ["--dsn", "postgresql://nobody@127.0.0.1:1/x", "ui", "--host", "0.0.0.0"], env={}
    )
    assert result.exit_code == 1
    assert "--token" in result.output


def test_a_database_without_pggcl_says_how_to_install_it(empty_dsn: str) -> None:
    with TestClient(create_app(empty_dsn), base_url=BASE) as http:
        page = http.get("/")
    assert page.status_code == 503
    assert "pggcl is not installed" in page.text and "pggcl db upgrade" in page.text


def test_a_role_that_loses_its_grant_is_refused_and_the_ui_turns_read_only(
    pggcl_dsn: str, user_dsn: Callable[[str], str], psql: Callable[..., str]
) -> None:
    dsn = user_dsn("pggcl_admin")
    role = psycopg.conninfo.conninfo_to_dict(dsn)["user"]
    with TestClient(create_app(dsn), base_url=BASE, follow_redirects=False) as http:
        token = csrf_of(http.get("/limits/new").text)  # the UI now trusts the role to manage
        psql(f'GRANT pggcl_user TO "{role}"; REVOKE pggcl_admin FROM "{role}"', pggcl_dsn)
        form = {"csrf": token, "name": "x", "limit": "1", "slot_decay_per_second": "0"}
        refused = http.post("/limits/new", data=form)
        assert refused.status_code == 403
        assert "read-only" in refused.text and "permission denied" in refused.text
        page = http.get("/").text  # asked again at once, not after the access TTL
        assert "Read-only" in page and "New limit" not in page
    assert names(pggcl_dsn) == []
