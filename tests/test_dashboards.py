"""The Grafana dashboard and the Prometheus files, against a real Prometheus scraping a real monitor on the clip.

Every PromQL expression of the dashboard and of the alert rules goes to Prometheus' HTTP API: each must
parse, and each dashboard expression must return at least one series from the running monitor.
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

import pytest
import yaml

from conftest import Broker, cut_clip, free_port, ROOT, street_config, wait_for_port
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.pipeline import Monitor

DASHBOARD = ROOT / "dashboards" / "monitor.json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SEGMENT_FRAMES = 40
SCRAPE_S = 1

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


@pytest.fixture(scope="module")
def scraped(tmp_path_factory, segment, person_model):
    """A monitor on the looped segment with metrics on, a broker, and a Prometheus scraping it every second."""
    workdir = tmp_path_factory.mktemp("prometheus")
    broker = Broker(workdir).start()
    metrics_port = free_port()
    data = street_config(
        broker.port,
        metrics_port,
        source=str(segment),
        loop=True,
        fps=10,
        safety=[{"rule": "intrusion", "name": "lot_intrusion", "zones": ["lot"], "classes": ["person"]}],
        escalation={"audit_every_s": None},
    )
    data["state_dir"] = str(workdir / "state")
    # an endpoint where nothing listens: escalation is set up (its series exist) but every call fails fast
    data["escalation"] = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0, "timeout_s": 2}
    monitor = Monitor(parse_config(data), Metrics())
    prometheus = Prometheus(workdir, metrics_port)
    monitor.start()
    prometheus.start()
    try:
        wait_until(lambda: _processed(prometheus) >= 10, timeout=180, what="Prometheus to see 10 processed frames")
        time.sleep(5 * SCRAPE_S)  # enough samples for rate() over the substituted windows
        yield prometheus
    finally:
        prometheus.stop()
        stopper = threading.Thread(target=monitor.stop)
        stopper.start()
        stopper.join(30)
        broker.stop()


def _processed(prometheus: Prometheus) -> float:
    result = prometheus.series('sum(monitor_frames_total{stage="processed"})')
    return float(result[0]["value"][1]) if result else 0.0


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
    failures = []
    for where, expr in dashboard_expressions(load_dashboard()) + alert_expressions():
        answer = scraped.query(substitute(expr))
        if answer["status"] != "success":
            failures.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}")
    assert not failures, "PromQL rejected by Prometheus:\n" + "\n".join(failures)


def test_every_dashboard_expression_returns_series(scraped):
    empty = [f"{where}: {expr}" for where, expr in dashboard_expressions(load_dashboard()) if not scraped.series(substitute(expr))]
    assert not empty, "dashboard expressions without any series:\n" + "\n".join(empty)


def test_camera_variable_lists_the_camera(scraped):
    answer = scraped.api("label/camera/values", **{"match[]": "monitor_camera_up"})
    assert answer["status"] == "success" and answer["data"] == ["street"]


def test_values_reflect_the_running_monitor(scraped):
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
