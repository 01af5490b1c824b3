import pytest

# The fixtures (pggcl_server_dsn, pggcl_template, pggcl_dsn, empty_dsn, psql) come from
# pggcl's own pytest plugin, the one users get; naming it here keeps the suite working
# even where the package's entry points are not installed.
pytest_plugins = ("pggcl.pytest_plugin",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Under pytest-xdist (scripts/test.sh runs `-n 4 --dist loadgroup`), each test file stays
    # on one worker, so a module's own cluster or server is started once; the Prefect tests
    # share one worker, since each worker would otherwise start its own Prefect server.
    for item in items:
        path = item.nodeid.split("::")[0]
        group = "prefect" if path.startswith("tests/prefect/") else path
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_report_header() -> str:
    # Which PostgreSQL this run tests (PGGCL_PG_BIN picks it; scripts/test.sh runs a matrix).
    from pggcl.testing import describe_server

    return f"pggcl: {describe_server()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Also under -q, which hides the header: the last lines name the server the tests ran on.
    from pggcl.testing import describe_server

    terminalreporter.write_line(f"pggcl: tests ran on {describe_server()}")
