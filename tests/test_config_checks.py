"""`monitor check` catches what used to pass or crash: each problem names its key, the file is named, the exit
code is 2 and there is no traceback. Problems that only show at run time are clear start-up errors or one log line."""

from __future__ import annotations

import copy
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import PERSON_MODEL, ROOT, cut_clip, street_config, write_config

BUNDLED = yaml.safe_load((ROOT / "config.yaml").read_text())


def bundled(change=lambda d: None) -> dict:
    data = copy.deepcopy(BUNDLED)
    data["models"]["person"]["path"] = str(PERSON_MODEL)
    data["cameras"]["street"]["source"] = str(ROOT / "data" / "vtest.avi")
    change(data)
    return data


def mqtt(**values):
    return lambda d: d["mqtt"].update(values)


CASES = [
    ("heartbeat-inf", "mqtt:\n  heartbeat_s: .inf\n", "mqtt.heartbeat_s: Input should be a finite number"),
    ("reconnect-huge", "cameras:\n  street:\n    reconnect: {max_s: 1e300}\n", "cameras.street.reconnect.max_s: Input should be less than or equal to 86400"),
    ("queue-huge", mqtt(queue_size=10**20), "mqtt.queue_size: Input should be less than or equal to 10000000"),
    ("history-huge", mqtt(outbox={"count_history": 10**15}), "mqtt.outbox.count_history: Input should be less than or equal to 1000000"),
    ("evidence-inf", lambda d: d["evidence"].update(max_mb=float("inf")), "evidence.max_mb: Input should be a finite number"),
    ("zone-huge-coordinate", lambda d: d["cameras"]["street"]["zones"]["lot"].update(polygon=[[0, 0], [1e300, 0], [0, 10]]),
     "cameras.street.zones.lot.polygon.1.0: Input should be less than or equal to 100000"),
    ("prefix-empty", mqtt(prefix=""), "mqtt.prefix: must not be empty or only '/' (every topic would start at the root)"),
    ("prefix-slash", mqtt(prefix="/"), "mqtt.prefix: must not be empty or only '/' (every topic would start at the root)"),
    ("prefix-control", mqtt(prefix="site\x01"), "mqtt.prefix: 'site\\x01': control characters are not allowed in MQTT topics"),
    ("client-id-escapes", mqtt(client_id="../../x"),
     "mqtt.client_id: '../../x': expected a name without '/', '\\' or control characters (it names the outbox file in state_dir)"),
    ("host-empty", mqtt(host=""), "mqtt.host: '': expected a host name or address"),
    ("duplicate-camera", "DUPLICATE", "cameras.street: duplicate key (lines"),
    ("ca-missing", mqtt(tls={"ca_file": "certs/ca.pem"}), "mqtt.tls.ca_file: cannot read {dir}/certs/ca.pem (No such file or directory)"),
    ("ca-not-a-certificate", mqtt(tls={"ca_file": "config.yaml"}), "mqtt.tls.ca_file: {dir}/config.yaml holds no usable CA certificate"),
    ("ca-a-folder", mqtt(tls={"ca_file": "."}), "mqtt.tls.ca_file: cannot read {dir} (Is a directory)"),
    ("metrics-host-foreign", lambda d: d["metrics"].update(host="203.0.113.7"), "metrics.host: cannot listen on '203.0.113.7' (Cannot assign requested address)"),
    ("not-utf8", "NOT-UTF8", "not UTF-8 text (byte 0xff on line 2)"),
]


def write_case(folder: Path, change) -> Path:
    path = folder / "config.yaml"
    if change == "DUPLICATE":  # two cameras named street: YAML alone would silently keep the second
        text = yaml.safe_dump(bundled(), sort_keys=False)
        path.write_text(text.replace("cameras:\n", "cameras:\n  street:\n    source: 0\n    model: person\n", 1))
    elif change == "NOT-UTF8":
        path.write_bytes(yaml.safe_dump(bundled(), sort_keys=False).encode().replace(b"\n", b"\n# caf\xff\n", 1))
    elif isinstance(change, str):
        merged = bundled()
        for key, value in yaml.safe_load(change).items():
            merged[key] = _merge(merged.get(key), value)
        write_config(folder, merged)
    else:
        write_config(folder, bundled(change))
    return path


def _merge(base, extra):
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in extra.items()}}
    return extra


def test_monitor_check_names_each_problem_and_its_file_and_exits_2(tmp_path):
    """All cases through the real command-line entry point, in one process (each its own config file)."""
    folders = []
    for name, change, _ in CASES:
        folder = tmp_path / name
        folder.mkdir()
        write_case(folder, change)
        folders.append(str(folder / "config.yaml"))
    driver = (
        "import contextlib, io, json, sys\nfrom monitor.cli import main\nout = []\n"
        "for path in sys.argv[1:]:\n    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n        code = main(['check', '--no-models', '--config', path])\n"
        "    out.append([code, err.getvalue()])\nprint(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", driver, *folders], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "YOLO_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    import json

    for (name, _, expected), (code, stderr) in zip(CASES, json.loads(result.stdout)):
        folder = tmp_path / name
        assert code == 2, (name, stderr)
        assert f"config error in {folder / 'config.yaml'}:" in stderr, (name, stderr)
        assert expected.format(dir=folder) in stderr, (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)


def test_a_cuda_device_this_machine_lacks_is_a_config_error(tmp_path):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    path = write_config(tmp_path, bundled(lambda d: d["models"]["person"].update(device=f"cuda:{count}")))
    result = subprocess.run([sys.executable, "-m", "monitor", "check", "--config", str(path)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    assert f"  models.person.device: cuda:{count} does not exist (this machine has " in result.stderr
    assert "Traceback" not in result.stderr


def test_a_metrics_port_in_use_is_a_clear_start_up_error(tmp_path, broker):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        path = write_config(tmp_path, street_config(broker.port, metrics_port=port))
        result = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(path)], capture_output=True,
                                text=True, timeout=300, env={**os.environ, "YOLO_OFFLINE": "1"})
    finally:
        taken.close()
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"metrics.port: cannot listen on 127.0.0.1:{port} (Address already in use)" in result.stderr
    assert f"config error in {path}" in result.stderr and "Traceback" not in result.stderr


def test_zones_and_lines_outside_the_first_frame_are_logged_once(tmp_path, broker, clip, caplog):
    from monitor.config import load_config
    from monitor.pipeline import Monitor

    data = street_config(broker.port, source=str(cut_clip(clip, tmp_path / "short.avi", count=12)))
    data["models"]["person"].update(imgsz=320)
    street = data["cameras"]["street"]
    street["zones"]["far"] = {"polygon": [[900, 100], [1000, 100], [950, 200]]}  # the frame is 768x576
    street["lines"]["below"] = {"points": [[0, 700], [768, 700]]}
    path = write_config(tmp_path, data)
    caplog.set_level(logging.INFO, logger="monitor")
    monitor = Monitor(load_config(path))
    monitor.start()
    try:
        deadline = time.monotonic() + 120
        while not monitor.loops["street"].finished and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        monitor.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"camera street: cameras.street.zones.far.polygon (in {path}) lies wholly outside the 768x576 frame; it will never count anything",
        f"camera street: cameras.street.lines.below.points (in {path}) lies wholly outside the 768x576 frame; it will never count anything",
    ]


@pytest.mark.parametrize("relative", [True, False])
def test_tls_files_resolve_against_the_config_folder(tmp_path, relative):
    from test_resilience import make_ca_and_server_cert

    from monitor.config import load_config

    (tmp_path / "certs").mkdir()
    ca, _, _ = make_ca_and_server_cert(tmp_path / "certs")
    given = "certs/ca.crt" if relative else str(ca)
    path = write_config(tmp_path, bundled(mqtt(tls={"ca_file": given})))
    assert load_config(path).mqtt.tls.ca_file == ca
