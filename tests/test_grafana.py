"""The Grafana dashboard (docs/grafana-dashboard.json, issue #16.5): a dashboard Grafana can
import, whose every PromQL expression names only metrics that pggcl.prometheus renders for a
limit that has been used, filtered by the dashboard's job and limit variables."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pggcl
from pggcl.errors import AcquireConcurrencySlotTimeoutError
from pggcl.prometheus import exposition

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
DOC = DASHBOARD.with_name("grafana.md")

#: The PromQL functions and aggregations the dashboard may call (a misspelt one fails).
FUNCTIONS = {"histogram_quantile", "rate", "increase", "max", "sum"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
KEYWORDS |= {"and", "or", "unless", "offset"}
#: Labels Prometheus adds to every scraped series.
SCRAPE_LABELS = {"job", "instance"}

_SELECTOR = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?")


def parse(expr: str) -> tuple[set[str], list[tuple[str, dict[str, str]]], set[str], set[str]]:
    """What a PromQL expression names: its metrics, its selectors (metric and matchers), the
    labels of its by/without clauses and the functions it calls. A metric written without a
    selector is a selector with no matchers."""
    selectors: list[tuple[str, dict[str, str]]] = []

    def selector(found: re.Match[str]) -> str:
        body = found.group(2).strip()
        matchers = {m.group(1): m.group(3) for m in _MATCHER.finditer(body)}
        assert "".join(m.group(0) for m in _MATCHER.finditer(body)) == body, body
        selectors.append((found.group(1), matchers))
        return " "

    rest = _SELECTOR.sub(selector, expr)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)  # range durations: [5m], [$__rate_interval]
    grouping: set[str] = set()
    for found in _GROUPING.finditer(rest):
        grouping |= {label.strip() for label in found.group(2).split(",") if label.strip()}
    rest = _GROUPING.sub(" ", rest)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)
    functions: set[str] = set()
    for found in _IDENT.finditer(rest):
        word = found.group(1)
        if found.group(2):
            functions.add(word)
        elif word not in KEYWORDS:
            selectors.append((word, {}))
    metrics = {metric for metric, _ in selectors}
    # What remains is operators, numbers, parentheses and commas.
    leftover = _IDENT.sub(" ", rest)
    assert re.fullmatch(r"[\s()0-9.,+\-*/^%<>=!]*", leftover), f"cannot read {leftover!r}"
    return metrics, selectors, grouping, functions


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in dash["panels"]
        for target in panel["targets"]
    ]
    found += [
        (f"variable ${var['name']}", var["query"])
        for var in dash["templating"]["list"]
        if var["type"] == "query"
    ]
    return found


def label_values(query: str) -> tuple[str, str]:
    """Grafana's variable query ``label_values(SELECTOR, LABEL)``: the selector and the label."""
    found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert found, f"not a label_values query: {query}"
    return found.group(1), found.group(2)


def rendered(dsn: str) -> tuple[set[str], set[str]]:
    """The sample names and label names of /metrics's text, for a database with a limit that
    granted at once, queued, refused, timed out, and held."""
    with pggcl.Client(dsn) as client:
        client.create_limit("db", 1)
        with client.concurrency("db"):
            pass
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with client.concurrency("db"):
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(30)
            with (
                pytest.raises(AcquireConcurrencySlotTimeoutError),
                client.concurrency("db", timeout_seconds=0),  # refused, no wait
            ):
                pass
            with (
                pytest.raises(AcquireConcurrencySlotTimeoutError),
                client.concurrency("db", timeout_seconds=0.2),  # queued, then gave up
            ):
                pass
        finally:
            release.set()
            holder.join(30)
        # And a template with an instance: its pggcl_template_ families (/metrics's reads).
        client.create_limit("tenant:*", 1)
        with client.concurrency("tenant:a"):
            pass
        text = exposition(client.busiest_limits(), client.template_totals())
    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    return names, labels


def test_the_dashboard_has_grafanas_shape() -> None:
    dash = dashboard()
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["title"] and dash["uid"] and dash["id"] is None
    variables = {var["name"]: var for var in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # One variable over the limit's label, several limits at once or all of them.
    assert variables["name"]["type"] == "query"
    assert re.fullmatch(r"label_values\(pggcl_\w+\{.*\}, name\)", variables["name"]["query"])
    assert variables["name"]["multi"] and variables["name"]["includeAll"]
    panels = dash["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["type"] == "timeseries" and panel["title"] and panel["description"]
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            # Per limit, or (the pggcl_template_ panels) per template.
            per = "template" if "pggcl_template_" in target["expr"] else "name"
            assert target["expr"].strip() and f"{{{{{per}}}}}" in target["legendFormat"]
    # What the issue asks for, each in some panel.
    every = " ".join(expr for _, expr in expressions(dash))
    for wanted in (
        "pggcl_active_slots",
        "pggcl_limit",
        "pggcl_waiting",
        "histogram_quantile(0.99, max by (name, le) (rate(pggcl_wait_seconds_bucket",
        "rate(pggcl_grants_total",
        "rate(pggcl_denied_total",
        "rate(pggcl_reclaimed_slots_total",
        "pggcl_template_active_slots",
        "pggcl_template_instances",
        "rate(pggcl_template_grants_total",
    ):
        assert wanted in every, wanted
    # Templates: one variable over their label, as for limits.
    assert variables["template"]["type"] == "query"
    assert re.fullmatch(
        r"label_values\(pggcl_template_\w+\{.*\}, template\)", variables["template"]["query"]
    )
    assert variables["template"]["multi"] and variables["template"]["includeAll"]


def test_every_metric_of_the_dashboard_is_rendered(pggcl_dsn: str) -> None:
    names, labels = rendered(pggcl_dsn)
    assert "pggcl_grants_total" in names and "pggcl_wait_seconds_bucket" in names
    dash = dashboard()
    variables = {var["name"] for var in dash["templating"]["list"]}
    for where, expr in expressions(dash):
        if where.startswith("variable"):
            expr, label = label_values(expr)
            assert label in labels | SCRAPE_LABELS, f"{where}: no label {label}"
        metrics, selectors, grouping, functions = parse(expr)
        assert metrics, f"{where}: no metric in {expr}"
        assert metrics <= names, f"{where}: {sorted(metrics - names)} not in /metrics"
        assert functions <= FUNCTIONS, f"{where}: unknown function {sorted(functions)}"
        assert grouping <= labels | SCRAPE_LABELS, f"{where}: by {grouping}"
        for metric, matchers in selectors:
            assert set(matchers) <= labels | SCRAPE_LABELS, f"{where}: {metric}{matchers}"
            if where.startswith("panel"):
                assert matchers.get("job") == "$job", f"{where}: {metric} not by $job"
                # Every panel shows the limits (or templates) the variable selects, one series
                # each.
                per = "template" if metric.startswith("pggcl_template_") else "name"
                assert matchers.get(per) == f"${per}", f"{where}: {metric} not by ${per}"
                assert per in grouping or not grouping, where
        for used in re.findall(r"\$(\w+)", expr):
            assert used in variables or used == "__rate_interval", f"{where}: ${used}"
        if "histogram_quantile" in expr:
            assert all(m.endswith("_bucket") for m in metrics) and "le" in grouping, where


@pytest.mark.parametrize(
    "expr",
    [
        'max by (name) (pggcl_grant_total{job="$job", name=~"$name"})',  # misspelt
        'max by (name) (rate(pggcl_wait_seconds{job="$job", name=~"$name"}[5m]))',  # no _bucket
        "rate(pgcl_denied_total[5m])",
        'pggcl_limit{job="$job", name=~"$name"} / pggcl_limits{job="$job"}',
    ],
)
def test_a_metric_that_is_not_rendered_is_caught(expr: str) -> None:
    names = {f"pggcl_{suffix}" for suffix in ("limit", "grants_total", "denied_total")}
    names |= {f"pggcl_wait_seconds_{suffix}" for suffix in ("bucket", "sum", "count")}
    metrics, _, _, _ = parse(expr)
    assert metrics - names


def test_the_expressions_are_read_whole() -> None:
    expr = (
        'histogram_quantile(0.9, max by (name, le) (rate(pggcl_wait_seconds_bucket{job="$job",'
        ' name=~"$name"}[$__rate_interval]))) / max by (name) (pggcl_limit{job="$job"} > 0)'
    )
    metrics, selectors, grouping, functions = parse(expr)
    assert metrics == {"pggcl_wait_seconds_bucket", "pggcl_limit"}
    assert selectors[0] == ("pggcl_wait_seconds_bucket", {"job": "$job", "name": "$name"})
    assert grouping == {"name", "le"}
    assert functions == {"histogram_quantile", "max", "rate"}


def test_the_doc_shows_each_panel_and_its_promql() -> None:
    doc = DOC.read_text()
    for where, expr in expressions(dashboard()):
        assert f"`{expr}`" in doc, f"docs/grafana.md lacks the PromQL of {where}"
    for panel in dashboard()["panels"]:
        assert f"**{panel['title']}**" in doc, panel["title"]
