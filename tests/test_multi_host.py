"""A site of several camera hosts: two `monitor run` processes (two cameras each) whose model runs on one Triton
server, and a central Prometheus that scrapes one host directly (file_sd) and federates the other host's own
Prometheus, with the shipped configurations (prometheus/central.yml, edge.yml, targets/)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, Broker, cut_clip, free_port, street_config, write_config
from test_dashboards import PROMTOOL, Prometheus, dashboard_expressions, load_dashboard, substitute, wait_until
from triton_fixtures import start_server, triton_model, write_python_repository

CENTRAL = ROOT / "prometheus" / "central.yml"
EDGE = ROOT / "prometheus" / "edge.yml"
ALERTS = ROOT / "prometheus" / "alerts.yml"
DROP_IN = ROOT / "systemd" / "monitor.service.d" / "edge.conf"
HOSTS = ("edge-a", "edge-b")  # edge-a: scraped by the central Prometheus; edge-b: federated from its own


def start_host(name: str, workdir: Path, broker_port: int, triton_url: str, segment: Path) -> tuple[subprocess.Popen, int]:
    """`monitor run` with two cameras on the looped segment, its model on Triton; (process, metrics port)."""
    metrics_port = free_port()
    data = street_config(broker_port, metrics_port, source=str(segment), realtime=True, loop=True, fps=5, safety=[])
    data["cameras"]["street2"] = data["cameras"]["street"]
    data["models"]["person"] = triton_model(triton_url)
    data["mqtt"].update(prefix=f"site/{name}", client_id=name)
    data["state_dir"] = str(workdir / "state")
    config = write_config(workdir, data)
    env = {**os.environ, "YOLO_OFFLINE": "1", "STATE_DIRECTORY": str(workdir / "state")}
    log = (workdir / "monitor.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config)], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    return process, metrics_port


def with_config(prometheus: Prometheus, config: dict) -> Prometheus:
    prometheus.config.write_text(yaml.safe_dump(config))
    return prometheus.start()


def fast(config: dict) -> dict:
    """A shipped Prometheus config at a 1 s interval, its rule file by absolute path."""
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    return config


@pytest.fixture(scope="module")
def site(tmp_path_factory, person_model, clip):
    workdir = tmp_path_factory.mktemp("site")
    repository = workdir / "repository"
    # a busy server (100 ms a batch on top of the model): requests of several cameras wait together, as on a shared GPU
    write_python_repository(repository, person_model, "person-fall", "--queue-delay-us", "20000", "--delay-ms", "100")
    server = start_server(repository, workdir)
    broker = Broker(workdir).start()
    segment = cut_clip(clip, workdir / "segment.avi", 0, 40)
    hosts = {}
    for name in HOSTS:
        (workdir / name).mkdir()
        hosts[name] = start_host(name, workdir / name, broker.port, server.grpc_url, segment)
    # edge-b's own Prometheus, as edge.yml says
    edge = yaml.safe_load(EDGE.read_text())
    edge["global"]["external_labels"]["host"] = "edge-b"
    edge["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{hosts['edge-b'][1]}"]
    (workdir / "edge-prometheus").mkdir()
    edge_prometheus = with_config(Prometheus(workdir / "edge-prometheus", 0), fast(edge))
    # the central Prometheus, as central.yml says, its file_sd files listing edge-a and edge-b's Prometheus
    targets = workdir / "targets"
    targets.mkdir()
    (targets / "monitors.yml").write_text(yaml.safe_dump([{"targets": [f"127.0.0.1:{hosts['edge-a'][1]}"], "labels": {"host": "edge-a"}}]))
    (targets / "edge-prometheus.yml").write_text(yaml.safe_dump([{"targets": [f"127.0.0.1:{edge_prometheus.port}"]}]))
    central = yaml.safe_load(CENTRAL.read_text())
    for job, file in zip(central["scrape_configs"], ("monitors.yml", "edge-prometheus.yml")):
        job["file_sd_configs"][0].update(files=[str(targets / file)], refresh_interval="1s")
    (workdir / "central").mkdir()
    central_prometheus = with_config(Prometheus(workdir / "central", 0), fast(central))
    try:
        for host in HOSTS:
            wait_until(lambda: processed(central_prometheus, host) >= 20, timeout=180, what=f"20 processed frames of {host}")
        yield server, central_prometheus
    finally:
        for process, _ in hosts.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in hosts.values():
            process.wait(60)
        central_prometheus.stop()
        edge_prometheus.stop()
        broker.stop()
        server.stop()


def processed(prometheus: Prometheus, host: str) -> float:
    result = prometheus.series(f'sum(monitor_frames_total{{host="{host}", stage="processed"}})')
    return float(result[0]["value"][1]) if result else 0.0


def test_triton_batches_the_requests_of_both_hosts(site):
    server, central = site
    figures = server.model_figures("person-fall")
    print(f"Triton: {figures}")
    assert figures["failed"] == 0
    # Triton's own metrics: fewer executions than requests (requests of different cameras and hosts ran as one
    # batch) and more frames than executions (batches larger than one)
    assert figures["executions"] < figures["requests"] <= figures["frames"]
    assert figures["frames"] / figures["executions"] > 1.2
    for host in HOSTS:
        assert processed(central, host) >= 20


def test_central_prometheus_lists_every_host(site):
    _, central = site
    answer = central.api("label/host/values", **{"match[]": "monitor_build_info"})
    assert answer["status"] == "success" and answer["data"] == list(HOSTS)
    cameras = {(s["metric"]["host"], s["metric"]["camera"]) for s in central.series("monitor_camera_up == 1")}
    assert cameras == {(host, camera) for host in HOSTS for camera in ("street", "street2")}
    federated = central.series('monitor_build_info{host="edge-b"}')
    assert [s["metric"]["job"] for s in federated] == ["monitor"]  # honor_labels: the edge's own job label


def test_the_dashboards_host_variable_selects_one_host(site):
    _, central = site
    for where, expr in dashboard_expressions(load_dashboard()):
        query = substitute(expr.replace("$host", "edge-b"))
        hosts = {s["metric"].get("host") for s in central.series(query)}
        assert hosts <= {"edge-b", None}, f"{where}: {hosts}"  # None: a panel that sums over the hosts
    picked = central.series(substitute('sum by (host, camera, stage) (rate(monitor_frames_total{host=~"$host"}[$__rate_interval]))'.replace("$host", "edge-a")))
    assert {s["metric"]["host"] for s in picked} == {"edge-a"} and len(picked) == 6  # 2 cameras x 3 stages


def test_shipped_prometheus_configs_pass_promtool():
    for config in (CENTRAL, EDGE):
        done = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_edge_systemd_drop_in_verifies(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = tmp_path / "monitor.service"
    unit.write_text((ROOT / "systemd" / "monitor.service").read_text().replace("/opt/monitor/venv/bin/monitor", "/bin/true"))
    (tmp_path / "monitor.service.d").mkdir()
    shutil.copy(DROP_IN, tmp_path / "monitor.service.d" / DROP_IN.name)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}  # the drop-in is read from beside the unit
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = DROP_IN.read_text()
    assert "TimeoutStartSec=infinity" in text and "After=mosquitto.service" in text
