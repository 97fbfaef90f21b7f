"""The Grafana dashboard and the Prometheus files, against a real Prometheus scraping a real monitor.

Two set-ups: the street clip (every feature on: lines, a target fps, a safety rule, escalation to an endpoint
that fails), and the ice-store example (examples/ice-store.yaml on its generated clip, escalation on against a real
HTTP server speaking the OpenAI API, tests/fake_openai.py; no lines, no target fps). Every PromQL expression of
the dashboard and of the alert rules goes to Prometheus' HTTP API: each must parse, and each dashboard expression
must return at least one series unless the feature it shows is off in that set-up, in which case its panel says
so (Grafana's "no value" text, e.g. "escalation off").
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from dataclasses import dataclass

import pytest
import yaml

from conftest import Broker, cut_clip, free_port, ROOT, street_config, wait_for_port
from fake_openai import Answer, FakeOpenAI
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.pipeline import Monitor
from monitor.tools import icegen

DASHBOARD = ROOT / "dashboards" / "monitor.json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SEGMENT_FRAMES = 40
SCRAPE_S = 1
EXAMPLE = ROOT / "examples" / "ice-store.yaml"

# optional features and the metrics that only they export; a target on them may be empty only where they are off
FEATURE_METRICS = {
    "escalation": ("monitor_escalations_total", "monitor_escalation_cost_total", "monitor_count_disagreement_total",
                   "monitor_escalation_budget_remaining"),
    "lines": ("monitor_line_crossings",),
    "target_fps": ("monitor_camera_target_fps",),
    "safety": ("monitor_safety_events",),
}

# Grafana's built-in variables, as Grafana would substitute them for a short time range
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__interval": "5s", "$__range": "5m", "$camera": ".*", "$host": ".*"}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def query_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def dashboard_expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title and refId, expression) for every target of every panel."""
    return [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in query_panels(dashboard) for t in p["targets"]]


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def feature_of(expr: str) -> str | None:
    return next((feature for feature, metrics in FEATURE_METRICS.items() if any(m in expr for m in metrics)), None)


def no_value_text(panel: dict) -> str:
    return panel.get("fieldConfig", {}).get("defaults", {}).get("noValue", "")


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


# --- structure, no services -----------------------------------------------------------------


def test_dashboard_structure():
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    camera = variables["camera"]
    assert camera["type"] == "query" and camera["query"]["query"] == 'label_values(monitor_camera_up{host=~"$host"}, camera)'
    assert variables["host"]["query"]["query"] == "label_values(monitor_build_info, host)"  # a label Prometheus adds
    assert variables["host"]["includeAll"] and variables["host"]["allValue"] == ".*"
    assert camera["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert camera["includeAll"] and camera["allValue"] == ".*"
    for panel in query_panels(dashboard):
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, where
        assert panel["targets"], f"{where} has no targets"
        assert panel.get("description"), f"{where} has no description"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], where
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], where
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where


def test_panels_of_optional_features_say_when_the_feature_is_off():
    for panel in query_panels(load_dashboard()):
        features = {feature_of(t["expr"]) for t in panel["targets"]}
        if features - {None} and None not in features:  # every target needs the feature: empty when it is off
            assert re.search(r"\b(off|no)\b", no_value_text(panel)), f"{panel['title']!r} shows nothing when {features} is off"


def test_escalation_panels_and_the_enabled_stat():
    panels = {panel["title"]: panel for panel in query_panels(load_dashboard())}
    escalation = [p for p in panels.values() if any(feature_of(t["expr"]) == "escalation" for t in p["targets"])]
    assert len(escalation) == 5 and all(no_value_text(p) == "escalation off" for p in escalation)
    stat = panels["Escalation"]
    assert [t["expr"] for t in stat["targets"]] == ['max(monitor_escalation_enabled{host=~"$host"})']
    (mapping,) = stat["fieldConfig"]["defaults"]["mappings"]
    assert mapping["options"]["0"]["text"] == "escalation off"


def test_dashboard_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}"
                cells[(x, y)] = panel["title"]


def test_dashboard_covers_what_operators_need():
    exprs = " ".join(expr for _, expr in dashboard_expressions(load_dashboard()))
    for metric in (
        "monitor_object_count",
        "monitor_frames_total",
        "monitor_inference_seconds_bucket",
        "monitor_camera_up",
        "monitor_camera_reconnects_total",
        "monitor_mqtt_connected",
        "monitor_outbox_messages",
        "monitor_safety_events_active",
        "monitor_safety_events_total",
        "monitor_escalations_total",
        "monitor_escalation_cost_total",
        "monitor_count_disagreement_total",
        "monitor_escalation_budget_remaining",
    ):
        assert metric in exprs, f"no panel shows {metric}"
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.95," in exprs


def test_alert_rules_have_summary_and_description():
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    names = {rule["alert"]: rule for rule in rules}
    assert {
        "MonitorCameraDown",
        "MonitorProcessedFpsBelowTarget",
        "MonitorMqttDisconnected",
        "MonitorOutboxGrowing",
        "MonitorEscalationBudgetNearlySpent",
        "MonitorSafetyEventActive",
    } <= set(names)
    assert names["MonitorCameraDown"]["for"] == "1m"
    assert names["MonitorProcessedFpsBelowTarget"]["for"] == "5m"
    for rule in rules:
        assert len(rule["annotations"]["summary"]) > 10 and len(rule["annotations"]["description"]) > 40, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]


def test_promtool_accepts_config_and_rules():
    for args in (["check", "config", str(PROMETHEUS_CONFIG)], ["check", "rules", str(ALERTS)]):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def test_grafana_provisioning_files():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "monitor-prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] and source["url"].startswith("http")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "monitor.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert datasources["apiVersion"] == providers["apiVersion"] == 1


# --- a real Prometheus scraping a real monitor ----------------------------------------------


@pytest.fixture(scope="module")
def segment(tmp_path_factory, clip) -> Path:
    """The clip's first seconds (with people on the path), played in a loop by the monitor."""
    return cut_clip(clip, tmp_path_factory.mktemp("clip") / "segment.avi", 0, SEGMENT_FRAMES)


class Prometheus:
    def __init__(self, workdir: Path, metrics_port: int):
        self.port = free_port()
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "monitor", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None

    def start(self) -> Prometheus:
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "prometheus.log").open("w"),
        )
        wait_for_port(self.port, timeout=30)
        wait_until(self._ready, timeout=30, what="Prometheus to be ready")
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as response:
            return response.status == 200

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # a bad query answers 400 with a JSON error
            return json.loads(error.read())

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def series(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        return answer["data"]["result"]


@dataclass
class Setup:
    """A monitor's config and which optional features it has on."""

    name: str
    data: dict
    features: set[str]
    camera: str
    ready: str  # PromQL that is non-empty once the run has what the checks need
    metrics_port: int = 0


def street_setup(broker: Broker, metrics_port: int, workdir: Path, segment: Path, openai: FakeOpenAI) -> Setup:
    data = street_config(
        broker.port,
        metrics_port,
        source=str(segment),
        loop=True,
        fps=10,
        safety=[{"rule": "intrusion", "name": "lot_intrusion", "zones": ["lot"], "classes": ["person"]}],
        escalation={"audit_every_s": None},
    )
    # an endpoint where nothing listens: escalation is set up (its series exist) but every call fails fast
    data["escalation"] = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0, "timeout_s": 2}
    return Setup("street", data, set(FEATURE_METRICS), "street", 'sum(monitor_frames_total{stage="processed"}) >= 10')


def ice_store_setup(broker: Broker, metrics_port: int, workdir: Path, segment: Path, openai: FakeOpenAI) -> Setup:
    """examples/ice-store.yaml as shipped (escalation on), on a short clip of its scene, against the OpenAI-API server."""
    clip = workdir / "ice-store.avi"
    icegen.write_clip(clip, seed=6, n_frames=40, fps=10)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["mqtt"].update(port=broker.port, client_id=f"ice-dashboard-{broker.port}")
    data["metrics"].update(port=metrics_port)
    data["models"]["bags"].update(path=str(ROOT / "models" / "ice-bags.pt"), threads=1)
    data["cameras"]["store"].update(source=str(clip), realtime=True, loop=True)
    data["escalation"].update(base_url=openai.base_url, api_key={"value": openai.api_key}, dataset={"dir": None})
    # answered escalations, not just the zero series: the panels show real calls, outcomes and cost
    ready = 'sum(monitor_escalations_total{outcome="ok"}) >= 1 and sum(monitor_frames_total{stage="processed"}) >= 10'
    return Setup("ice-store", data, {"escalation", "safety"}, "store", ready)


@pytest.fixture(scope="module", params=[street_setup, ice_store_setup], ids=["street", "ice-store"])
def scraped(request, tmp_path_factory, segment, person_model):
    """A monitor with metrics on, a broker, and a Prometheus scraping it every second."""
    workdir = tmp_path_factory.mktemp("prometheus")
    broker = Broker(workdir).start()
    openai = FakeOpenAI(default=Answer(totals={"ice_bag": 11}, description="bags on the shelves")).start()
    metrics_port = free_port()
    setup = request.param(broker, metrics_port, workdir, segment, openai)
    setup.data["state_dir"] = str(workdir / "state")
    setup.metrics_port = metrics_port
    monitor = Monitor(parse_config(setup.data), Metrics())
    prometheus = Prometheus(workdir, metrics_port)
    monitor.start()
    prometheus.start()
    try:
        wait_until(lambda: prometheus.series(setup.ready), timeout=180, what=f"Prometheus to see {setup.ready}")
        time.sleep(5 * SCRAPE_S)  # enough samples for rate() over the substituted windows
        yield prometheus, setup
    finally:
        prometheus.stop()
        stopper = threading.Thread(target=monitor.stop)
        stopper.start()
        stopper.join(30)
        openai.stop()
        broker.stop()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, AssertionError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def test_every_expression_parses(scraped):
    prometheus, _ = scraped
    failures = []
    for where, expr in dashboard_expressions(load_dashboard()) + alert_expressions():
        answer = prometheus.query(substitute(expr))
        if answer["status"] != "success":
            failures.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}")
    assert not failures, "PromQL rejected by Prometheus:\n" + "\n".join(failures)


def test_every_dashboard_expression_returns_series_where_its_feature_is_on(scraped):
    prometheus, setup = scraped
    empty, off = [], []
    for where, expr in dashboard_expressions(load_dashboard()):
        if not prometheus.series(substitute(expr)):
            feature = feature_of(expr)
            (off if feature and feature not in setup.features else empty).append(f"{where}: {expr} ({feature or 'always on'})")
    assert not empty, f"{setup.name}: dashboard expressions without any series although their feature is on:\n" + "\n".join(empty)
    expected_off = {"street": [], "ice-store": ["lines", "target_fps"]}[setup.name]
    assert sorted({line.rsplit("(", 1)[1].rstrip(")") for line in off}) == expected_off, off


def test_the_escalation_stat_reads_the_setup(scraped):
    prometheus, setup = scraped
    (series,) = prometheus.series("max(monitor_escalation_enabled)")
    assert float(series["value"][1]) == (1 if "escalation" in setup.features else 0)


def test_camera_variable_lists_the_camera(scraped):
    prometheus, setup = scraped
    answer = prometheus.api("label/camera/values", **{"match[]": "monitor_camera_up"})
    assert answer["status"] == "success" and answer["data"] == [setup.camera]


def test_values_reflect_the_running_monitor(scraped):
    scraped, setup = scraped
    if setup.name != "street":
        pytest.skip("the street clip's figures")

    def value(expr: str) -> float:
        (series,) = scraped.series(expr)
        return float(series["value"][1])

    assert value('monitor_camera_up{camera="street"}') == 1
    assert value("max(monitor_mqtt_connected)") == 1
    assert value('sum(rate(monitor_frames_total{camera="street", stage="processed"}[15s]))') > 0
    assert value('monitor_camera_target_fps{camera="street"}') == 10
    p95 = value('histogram_quantile(0.95, sum by (le) (rate(monitor_inference_seconds_bucket[1m])))')
    assert 0.001 < p95 < 10
    zones = {s["metric"]["zone"] for s in scraped.series('monitor_object_count{camera="street"}')}
    assert {"lot", "path", "lawn", "_all"} <= zones
    # people walk on the path in the first seconds of the clip
    assert value('max_over_time(monitor_object_count{camera="street", zone="_all", class="person"}[5m])') >= 1


def test_prometheus_loaded_the_alert_rules(scraped):
    scraped, _ = scraped
    answer = scraped.api("rules")
    rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} >= {name for name, _ in alert_expressions()}
    wait_until(lambda: all(r["health"] == "ok" for r in _rules(scraped)), timeout=30, what="every rule evaluated")
    firing = {alert["labels"]["alertname"] for alert in scraped.api("alerts")["data"]["alerts"]}
    assert "MonitorCameraDown" not in firing and "MonitorMqttDisconnected" not in firing


def _rules(prometheus: Prometheus) -> list[dict]:
    return [rule for group in prometheus.api("rules")["data"]["groups"] for rule in group["rules"]]


def test_grafana_variables_are_all_substituted():
    for _, expr in dashboard_expressions(load_dashboard()):
        assert not re.search(r"\$(?!__rate_interval|__interval|__range|camera|host)\w", expr), expr


README = ROOT / "README.md"


def readme_metrics_table() -> dict[str, tuple[str, set[str]]]:
    """README "Metrics": metric name -> (type, labels)."""
    text = README.read_text()
    section = text[text.index("## Metrics"):text.index("## Configuration reference")]
    rows = re.findall(r"^\| `(monitor_\w+)` \| (\w+) \|([^|]*)\|", section, re.M)
    return {name: (kind, {label.strip() for label in labels.split(",") if label.strip()}) for name, kind, labels in rows}


def exposed_metrics(port: int) -> dict[str, tuple[str, set[str] | None]]:
    """What a real scrape exposes: name -> (type, labels of its samples; None when it has no sample yet)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    types = dict(re.findall(r"^# TYPE (\w+) (\w+)$", text, re.M))
    found = {}
    for name, kind in types.items():
        if name.endswith("_created"):
            continue  # the client library's creation timestamps
        family = name.removesuffix("_total") if kind == "counter" else name
        labels = [set(m.group(1).split(",")) - {""} for m in re.finditer(rf"^{family}(?:_total|_bucket|_count|_sum)?\{{([^}}]*)\}}", text, re.M)]
        bare = re.search(rf"^{family}(?:_total|_count|_sum)? ", text, re.M)
        names = [{pair.split("=")[0] for pair in ls} - {"le"} for ls in labels]
        found[name] = (kind, names[0] if names else (set() if bare else None))
    return found


def test_the_readme_metrics_table_matches_a_real_scrape(scraped):
    """Names and types of every metric; labels of every metric that has a sample in this set-up (the fault
    counters, GPU fallbacks and outbox drops, have none on a healthy run, nor have the metrics of features off)."""
    _, setup = scraped
    table, exposed = readme_metrics_table(), exposed_metrics(setup.metrics_port)
    assert sorted(set(exposed) - set(table)) == [], "exposed but not in the README table"
    assert sorted(set(table) - set(exposed)) == [], "in the README table but not exposed"
    wrong = {name: (table[name], exposed[name]) for name in table
             if table[name][0] != exposed[name][0] or (exposed[name][1] is not None and table[name][1] != exposed[name][1])}
    assert wrong == {}
    unchecked = {name for name, (_, labels) in exposed.items() if labels is None}
    off = {metric for feature, metrics in FEATURE_METRICS.items() if feature not in setup.features for metric in metrics}
    assert unchecked - off <= {"monitor_outbox_dropped_total", "monitor_gpu_fallbacks_total", "monitor_escalation_seconds"}
