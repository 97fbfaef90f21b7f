"""Configuration: every bad config names its key path and what was expected, and `monitor check` exits non-zero."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PERSON_MODEL, ROOT, Broker, write_config
from safety_support import CLASS_NAMES, ZONES
from monitor.config import ConfigError, load_config, parse_config

BUNDLED = yaml.safe_load((ROOT / "config.yaml").read_text())
TRIANGLE = [[0, 0], [10, 0], [0, 10]]


def monitor_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
        env={**os.environ, "YOLO_OFFLINE": "1", **(env or {})},
    )


def bundled(change) -> dict:
    """The bundled config with one change, its model and clip by absolute path (so it validates from anywhere)."""
    data = copy.deepcopy(BUNDLED)
    data["models"]["person"]["path"] = str(PERSON_MODEL)
    data["cameras"]["street"]["source"] = str(ROOT / "data" / "vtest.avi")
    change(data)
    return data


def street(data: dict) -> dict:
    return data["cameras"]["street"]


def lot(data: dict) -> dict:
    return street(data)["zones"]["lot"]


BAD_CONFIGS = [
    ("zone-two-points", lambda d: lot(d).update(polygon=[[0, 0], [5, 5]]), "cameras.street.zones.lot.polygon: needs at least 3 points"),
    ("zone-collinear", lambda d: lot(d).update(polygon=[[0, 0], [1, 1], [2, 2]]), "cameras.street.zones.lot.polygon: points are collinear (zero area)"),
    ("zone-repeated-point", lambda d: lot(d).update(polygon=[[0, 0], [1, 1], [0, 0]]), "cameras.street.zones.lot.polygon: needs at least 3 distinct points"),
    (
        "zone-self-intersecting",
        lambda d: lot(d).update(polygon=[[0, 0], [10, 10], [10, 0], [0, 10]]),
        "cameras.street.zones.lot.polygon: edges 0 and 2 cross (the outline must not intersect itself)",
    ),
    ("zone-negative-coordinate", lambda d: lot(d).update(polygon=[[-5, 0], [10, 0], [0, 10]]), "cameras.street.zones.lot.polygon.0.0: Input should be greater than or equal to 0"),
    ("zone-nan-coordinate", lambda d: lot(d).update(polygon=[[0, 0], [float("nan"), 0], [0, 10]]), "cameras.street.zones.lot.polygon.1.0: Input should be a finite number"),
    ("zone-point-not-a-number", lambda d: lot(d).update(polygon=[[0, 0], [10, "ten"], [0, 10]]), "cameras.street.zones.lot.polygon.1.1: Input should be a valid number, unable to parse string as a number"),
    (
        "zone-reserved-name",
        lambda d: street(d)["zones"].update(counts={"polygon": TRIANGLE}),
        "cameras.street.zones.counts: 'counts' is reserved for MQTT topics (reserved: _all, _total, counts, escalations, events, status, totals)",
    ),
    (
        "zone-totals-name",
        lambda d: street(d)["zones"].update(totals={"polygon": TRIANGLE}),
        "cameras.street.zones.totals: 'totals' is reserved for MQTT topics (reserved: _all, _total, counts, escalations, events, status, totals)",
    ),
    (
        "line-reserved-name",
        lambda d: street(d)["lines"].update(status={"points": [[0, 0], [10, 10]]}),
        "cameras.street.lines.status: 'status' is reserved for MQTT topics (reserved: _all, _total, counts, escalations, events, status, totals)",
    ),
    ("zone-name-with-space", lambda d: street(d)["zones"].update({"front door": {"polygon": TRIANGLE}}), "cameras.street.zones.front door: 'front door' must use only letters, digits, '_' and '-'"),
    ("line-same-points", lambda d: street(d)["lines"]["crossing"].update(points=[[5, 5], [5, 5]]), "cameras.street.lines.crossing.points: the two points must differ"),
    ("camera-unknown-model", lambda d: street(d).update(model="vehicles"), "cameras.street.model: unknown model 'vehicles' (defined: person)"),
    ("camera-missing-source", lambda d: street(d).pop("source"), "cameras.street.source: required key is missing"),
    ("camera-url-scheme", lambda d: street(d).update(source="ftp://cam/stream"), "cameras.street.source: unsupported URL scheme in 'ftp://cam/stream' (rtsp, http(s), rtmp, udp, tcp, file)"),
    ("camera-negative-device", lambda d: street(d).update(source=-1), "cameras.street.source: a device index must be >= 0"),
    ("camera-file-missing", lambda d: street(d).update(source="/nonexistent/door.avi"), "cameras.street.source: file not found: /nonexistent/door.avi"),
    ("camera-login-in-url", lambda d: street(d).update(source={"url": "rtsp://admin:pw@cam/s1", "username": "admin"}), "cameras.street.source.url: give the login as username and password, not inside the URL"),
    ("camera-password-without-user", lambda d: street(d).update(source={"url": "rtsp://cam/s1", "password": {"env": "PW"}}), "cameras.street.source: a password needs a username"),
    ("camera-login-misspelt", lambda d: street(d).update(source={"url": "rtsp://cam/s1", "user": "admin"}), "cameras.street.source.user: unknown key (check the spelling)"),
    ("camera-login-not-a-stream", lambda d: street(d).update(source={"url": "door.avi"}), "cameras.street.source.url: expected a stream URL (rtsp, rtsps, rtmp, http, https, udp, tcp://host/...), got 'door.avi'"),
    ("camera-fps-zero", lambda d: street(d).update(fps=0), "cameras.street.fps: Input should be greater than 0"),
    ("camera-tracker", lambda d: street(d).update(tracker="sort"), "cameras.street.tracker: Input should be 'bytetrack', 'botsort' or 'none'"),
    ("camera-smoothing-method", lambda d: street(d)["smoothing"].update(method="mean"), "cameras.street.smoothing.method: Input should be 'median', 'hysteresis' or 'none'"),
    ("camera-smoothing-window", lambda d: street(d)["smoothing"].update(window=0), "cameras.street.smoothing.window: Input should be greater than or equal to 1"),
    ("camera-misspelt-key", lambda d: street(d).update(zone={}), "cameras.street.zone: unknown key (check the spelling)"),
    ("camera-reconnect-order", lambda d: street(d).update(reconnect={"initial_s": 10, "max_s": 1}), "cameras.street.reconnect: max_s must be >= initial_s"),
    ("no-cameras", lambda d: d.update(cameras={}), "cameras: needs at least one entry"),
    ("no-models", lambda d: d.pop("models"), "models: required key is missing"),
    ("model-imgsz", lambda d: d["models"]["person"].update(imgsz=650), "models.person.imgsz: must be a multiple of 32, got 650"),
    ("model-conf", lambda d: d["models"]["person"].update(conf=1.5), "models.person.conf: Input should be less than or equal to 1"),
    ("model-device", lambda d: d["models"]["person"].update(device="gpu"), "models.person.device: 'gpu': expected auto, cpu, cuda, cuda:N, a GPU index N or mps"),
    ("model-alias-name", lambda d: d["models"]["person"].update(aliases={"Normal": "a person"}), "models.person.aliases.Normal: 'a person' must use only letters, digits, '_' and '-'"),
    ("mqtt-port", lambda d: d["mqtt"].update(port=70000), "mqtt.port: Input should be less than or equal to 65535"),
    ("mqtt-prefix-wildcard", lambda d: d["mqtt"].update(prefix="site/#"), "mqtt.prefix: 'site/#': expected a topic prefix without '#', '+' or whitespace"),
    ("mqtt-qos", lambda d: d["mqtt"].update(qos=3), "mqtt.qos: Input should be 0, 1 or 2"),
    ("mqtt-password-two-sources", lambda d: d["mqtt"].update(username="u", password={"file": "pw", "env": "PW"}), "mqtt.password: give exactly one of value, file, env"),
    ("mqtt-tls-cert-without-key", lambda d: d["mqtt"].update(tls={"cert_file": "client.crt"}), "mqtt.tls: cert_file and key_file go together"),
    ("logging-level", lambda d: d["logging"].update(level="verbose"), "logging.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("metrics-port", lambda d: d["metrics"].update(port=-1), "metrics.port: Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize("change,expected", [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_names_key_path_and_expectation(change, expected):
    with pytest.raises(ConfigError) as error:
        parse_config(bundled(change))
    assert expected in error.value.problems


def test_monitor_check_exits_non_zero_for_every_bad_config(tmp_path):
    """The same table through the real command line, each config a file."""
    for name, change, expected in BAD_CONFIGS:
        path = write_config(tmp_path, bundled(change), f"{name}.yaml")
        result = monitor_cli("check", "--no-models", "--config", str(path))
        assert result.returncode == 2, (name, result.stderr)
        assert f"  {expected}\n" in result.stderr, (name, result.stderr)
        assert result.stdout == ""


def test_every_problem_is_reported_at_once():
    def two_problems(data):
        data["mqtt"].update(qos=3)
        lot(data).update(polygon=[[0, 0], [1, 1]])

    with pytest.raises(ConfigError) as error:
        parse_config(bundled(two_problems))
    assert error.value.problems == ["mqtt.qos: Input should be 0, 1 or 2", "cameras.street.zones.lot.polygon: needs at least 3 points"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("mqtt: [unclosed", "not valid YAML"),
        ("- a list\n- of things\n", "the top level must be a mapping of sections"),
    ],
)
def test_unreadable_yaml(tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = monitor_cli("check", "--no-models", "--config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr


def test_missing_config_file(tmp_path):
    result = monitor_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml: cannot read (No such file or directory)" in result.stderr


def test_run_refuses_a_bad_config_before_starting(tmp_path):
    path = write_config(tmp_path, bundled(lambda d: lot(d).update(polygon=[[0, 0], [5, 5]])))
    result = monitor_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "cameras.street.zones.lot.polygon: needs at least 3 points" in result.stderr
    assert "starting" not in result.stderr


def test_good_config_passes_with_its_model(tmp_path):
    result = monitor_cli("check", "--config", str(write_config(tmp_path, bundled(lambda d: None))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK (1 cameras, 1 models)")


def test_the_exports_cache_is_systemds_cache_directory_else_under_the_state_dir(tmp_path, monkeypatch):
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["models"]["person"]["path"] = str(PERSON_MODEL)
    data["cameras"]["street"]["source"] = str(ROOT / "data" / "vtest.avi")
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/monitor:/var/cache/other")
    assert load_config(write_config(tmp_path, data)).cache_dir == Path("/var/cache/monitor")
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/monitor")
    assert load_config(write_config(tmp_path, data)).cache_dir == Path("/var/lib/monitor/cache")
    data["cache_dir"] = "exports"  # relative: to the state dir, like everything the monitor writes
    assert load_config(write_config(tmp_path, data)).cache_dir == Path("/var/lib/monitor/exports")
    assert load_config(write_config(tmp_path, data)).models["person"].engine == "auto"  # the default


def test_bundled_config_passes_as_shipped():
    result = monitor_cli("check", "--config", "config.yaml")
    assert result.returncode == 0, result.stderr


def test_missing_model_file_is_a_clear_error_and_nothing_is_downloaded(tmp_path):
    """A well-known model name that Ultralytics would fetch from the internet must not be fetched."""
    path = write_config(tmp_path, bundled(lambda d: d["models"]["person"].update(path="yolov8n.pt")))
    result = monitor_cli("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"  models.person.path: file not found: {tmp_path / 'yolov8n.pt'}\n" in result.stderr
    assert "Download" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_unreadable_model_file_is_a_clear_error(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a model at all")
    path = write_config(tmp_path, bundled(lambda d: d["models"]["person"].update(path="broken.pt")))
    result = monitor_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert f"models.person.path: cannot load {tmp_path / 'broken.pt'}" in result.stderr


@pytest.mark.parametrize(
    "change,expected",
    [
        (
            lambda d: d["models"]["person"].update(class_conf={"Falling": 0.6}),
            "models.person.class_conf.Falling: unknown class (model has: Normal, Fall)",
        ),
        (
            lambda d: d["models"]["person"].update(aliases={"Walking": "person"}),
            "models.person.aliases.Walking: unknown class (model has: Normal, Fall)",
        ),
        (
            lambda d: street(d)["zones"]["lawn"].update(classes=["car"]),
            "cameras.street.zones.lawn.classes: unknown class 'car' (known: person)",
        ),
        (
            lambda d: street(d).update(classes=["Normal"]),  # aliased away: the camera sees only "person"
            "cameras.street.classes: unknown class 'Normal' (known: person)",
        ),
    ],
    ids=["class_conf", "aliases", "zone-classes", "camera-classes"],
)
def test_class_names_are_checked_against_the_real_model(tmp_path, change, expected):
    path = write_config(tmp_path, bundled(change))
    assert monitor_cli("check", "--no-models", "--config", str(path)).returncode == 0  # only the model knows its classes
    result = monitor_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert f"  {expected}\n" in result.stderr


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    folder = tmp_path / "site"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "people.pt").symlink_to(PERSON_MODEL)
    data = bundled(lambda d: d["models"]["person"].update(path="models/people.pt"))
    street(data).update(source="clips/door.avi")
    path = write_config(folder, data)
    (folder / "clips").mkdir()
    (folder / "clips" / "door.avi").symlink_to(ROOT / "data" / "vtest.avi")
    config = load_config(path)
    assert config.models["person"].path == folder / "models" / "people.pt"
    assert config.cameras["street"].source == str(folder / "clips" / "door.avi")
    result = monitor_cli("check", "--config", str(path), cwd=tmp_path)  # another working directory
    assert result.returncode == 0, result.stderr


def test_what_the_monitor_writes_lives_under_state_dir_and_what_it_reads_beside_the_config(tmp_path, monkeypatch):
    """Under the unit the config's folder (/etc/monitor) is read-only: relative data paths go under state_dir."""
    monkeypatch.delenv("STATE_DIRECTORY")
    data = bundled(lambda d: d.update(evidence={"dir": "snapshots"}))
    data["escalation"] = {"base_url": "http://127.0.0.1:9/v1", "dataset": {"dir": "escalations"}}
    data["mqtt"]["outbox"] = {"path": "queue.sqlite"}
    config = load_config(write_config(tmp_path, data))
    assert config.state_dir == tmp_path / "state"
    assert config.evidence.dir == tmp_path / "state" / "snapshots"
    assert config.escalation.dataset.dir == tmp_path / "state" / "escalations"
    assert config.mqtt.outbox.path == tmp_path / "state" / "queue.sqlite"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "var-lib-monitor"))  # as systemd sets it
    config = load_config(write_config(tmp_path, {**data, "evidence": {}}))
    assert config.escalation.dataset.dir == tmp_path / "var-lib-monitor" / "escalations"
    assert config.evidence.dir == tmp_path / "var-lib-monitor" / "evidence"


def test_paths_come_out_absolute_from_a_relative_config_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY")
    write_config(tmp_path, bundled(lambda d: d["models"]["person"].update(path=str(PERSON_MODEL))))
    config = load_config("config.yaml")
    assert config.evidence.dir == tmp_path / "state" / "evidence" and config.evidence.dir.is_absolute()


def test_paths_come_out_without_dot_dot_parts(tmp_path, monkeypatch):
    """As the ice-store example has it (state_dir: ../state): event snapshot paths and logs show a plain path."""
    monkeypatch.delenv("STATE_DIRECTORY")
    (tmp_path / "examples").mkdir()
    data = bundled(lambda d: d.update(state_dir="../state"))
    street(data).update(source="../data/vtest.avi")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vtest.avi").symlink_to(ROOT / "data" / "vtest.avi")
    config = load_config(write_config(tmp_path / "examples", data))
    assert config.state_dir == tmp_path / "state" and str(config.state_dir) == f"{tmp_path}/state"
    assert str(config.evidence.dir) == f"{tmp_path}/state/evidence"
    assert config.cameras["street"].source == f"{tmp_path}/data/vtest.avi"


def test_a_password_inside_a_camera_url_in_a_readable_config_is_a_warning(tmp_path, caplog):
    path = write_config(tmp_path, bundled(lambda d: street(d).update(source="rtsp://admin:hunter2@10.0.0.5/s1")))
    path.chmod(0o644)
    assert load_config(path).cameras["street"].source == "rtsp://admin:hunter2@10.0.0.5/s1"  # still works
    (warning,) = [r.getMessage() for r in caplog.records if "inside the URL" in r.getMessage()]
    assert warning.startswith(f"cameras.street.source: a password inside the URL in {path}, which every user can read (mode 644)")
    assert "hunter2" not in warning and "{url, username, password}" in warning


def test_a_camera_login_for_monitor_check_comes_from_the_credentials(tmp_path):
    data = bundled(lambda d: street(d).update(source={"url": "rtsp://10.0.0.21/s1", "username": "admin", "password": {"file": "cam-dock"}}))
    path = write_config(tmp_path, data)
    result = monitor_cli("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "  cameras.street.source.password: cannot read secret file cam-dock: No such file or directory " \
           "($CREDENTIALS_DIRECTORY is not set" in result.stderr
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "cam-dock").write_text("hunter2\n")
    result = monitor_cli("check", "--config", str(path), cwd=tmp_path, env={"CREDENTIALS_DIRECTORY": str(tmp_path / "credentials")})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "source,expected",
    [
        ("rtsp://user:pw@10.0.0.5:554/stream1", "rtsp://user:pw@10.0.0.5:554/stream1"),
        ("http://10.0.0.6/mjpeg", "http://10.0.0.6/mjpeg"),
        ("/dev/video0", "/dev/video0"),
        (0, 0),
        ("2", 2),
    ],
)
def test_stream_and_device_sources_are_kept_as_given(source, expected):
    config = parse_config(bundled(lambda d: street(d).update(source=source)), base_dir=Path("/somewhere"))
    assert config.cameras["street"].source == expected


SECRET = "s3cret-Pa55word"


def test_secret_from_environment_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("MONITOR_TEST_PASSWORD", SECRET)
    config = load_config(write_config(tmp_path, bundled(lambda d: d["mqtt"].update(username="monitor", password={"env": "MONITOR_TEST_PASSWORD"}))))
    assert config.mqtt.password.reveal() == SECRET
    for shown in (repr(config), str(config), config.model_dump_json(), repr(config.mqtt)):
        assert SECRET not in shown


def test_secret_from_file_is_never_shown(tmp_path, monkeypatch):
    (tmp_path / "mqtt-password").write_text(SECRET + "\n")
    config = load_config(write_config(tmp_path, bundled(lambda d: d["mqtt"].update(username="monitor", password={"file": str(tmp_path / "mqtt-password")}))))
    assert config.mqtt.password.reveal() == SECRET
    for shown in (repr(config), str(config), config.model_dump_json()):
        assert SECRET not in shown


def test_secret_file_name_is_looked_up_in_credentials_directory(tmp_path, monkeypatch):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt-password").write_text(SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    config = parse_config(bundled(lambda d: d["mqtt"].update(username="monitor", password={"file": "mqtt-password"})))
    assert config.mqtt.password.reveal() == SECRET


def test_unset_secret_environment_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MONITOR_TEST_PASSWORD", raising=False)
    config = parse_config(bundled(lambda d: d["mqtt"].update(username="monitor", password={"env": "MONITOR_TEST_PASSWORD"})))
    with pytest.raises(ConfigError, match="environment variable MONITOR_TEST_PASSWORD is not set"):
        config.mqtt.password.reveal()


def test_password_reaches_a_real_broker_and_never_the_log(tmp_path, monkeypatch, caplog):
    """Mosquitto with a password file: the publisher logs in with the secret from the environment; DEBUG logs never show it."""
    import getpass
    import shutil

    from monitor.publishing import Publisher

    passwords = tmp_path / "passwd"
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-c", "-b", str(passwords), "monitor", SECRET], check=True)
    # the later allow_anonymous wins; "user" keeps a root-started Mosquitto able to read the private tmp_path
    broker = Broker(tmp_path, f"allow_anonymous false\npassword_file {passwords}\nuser {getpass.getuser()}").start()
    monkeypatch.setenv("MONITOR_TEST_PASSWORD", SECRET)
    data = bundled(lambda d: d["mqtt"].update(port=broker.port, username="monitor", password={"env": "MONITOR_TEST_PASSWORD"}))
    data["mqtt"]["outbox"] = {"enabled": False}
    config = parse_config(data, base_dir=tmp_path)
    caplog.set_level(logging.DEBUG)
    publisher = Publisher(config.mqtt)
    try:
        publisher.start()
        assert publisher.connected.wait(10), "the broker refused the password"
    finally:
        publisher.stop()
        broker.stop()
    assert SECRET not in caplog.text


def _config_with(rules: list[dict]) -> dict:
    return {"models": {"m": {"path": "m.pt"}}, "cameras": {"c": {"source": "rtsp://cam/x", "model": "m", "zones": ZONES, "safety": rules}}}


@pytest.mark.parametrize(
    "rules, message",
    [
        ([{"rule": "intrusion", "zones": ["dock"]}], "cameras.c.safety.0.zones: unknown zone 'dock' (defined: lot, yard)"),
        ([{"rule": "intrusion", "zones": ["lot"]}, {"rule": "intrusion", "zones": ["yard"]}], "cameras.c.safety.1.name: duplicate rule name 'intrusion'"),
        ([{"rule": "occupancy", "zones": ["lot"], "above": 1, "below": 3}], "give exactly one of above, below"),
        ([{"rule": "person_down", "ambiguous_conf": [0.7, 0.2]}], "ambiguous_conf: needs 0 <= lo < hi <= 1"),
        ([{"rule": "teleport"}], "cameras.c.safety.0: Input tag 'teleport'"),
        ([{"rule": "dwell", "zones": ["lot"]}], "max_seconds: required key is missing"),
    ],
)
def test_bad_rules_are_named_by_their_key_path(rules, message):
    with pytest.raises(ConfigError) as error:
        parse_config(_config_with(rules))
    assert message in str(error.value)


def test_bundled_config_has_the_street_rules():
    from monitor.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml")
    rules = {rule.key: rule.rule for rule in config.cameras["street"].safety}
    assert rules == {"lot_intrusion": "intrusion", "person_down": "person_down", "crowding": "occupancy", "lawn_loitering": "dwell", "camera_stale": "stale_camera"}
    assert config.evidence.dir is not None and config.evidence.max_mb > 0


def test_rule_classes_are_checked_against_the_model():
    from monitor.config import check_model_classes

    config = parse_config(_config_with([{"rule": "intrusion", "zones": ["lot"], "classes": ["person", "Fall", "forklift"]}, {"rule": "person_down", "fall_classes": ["Lying"]}]))
    config = config.model_copy(update={"models": {"m": config.models["m"].model_copy(update={"aliases": {"Normal": "person", "Fall": "person"}})}})
    with pytest.raises(ConfigError) as error:
        check_model_classes(config, {"m": CLASS_NAMES})
    assert error.value.problems == [
        "cameras.c.safety.0.classes: unknown class 'forklift' (known: person, Normal, Fall)",
        "cameras.c.safety.1.fall_classes: unknown class 'Lying' (known: Normal, Fall)",
    ]


# --- web: the operator's page --------------------------------------------------------------------------------


def test_the_page_is_off_by_default_and_on_loopback_when_on():
    config = parse_config({"models": BUNDLED["models"], "cameras": BUNDLED["cameras"]})
    assert config.web.enabled is False and config.web.host == "127.0.0.1" and config.web.token is None
    assert load_config(ROOT / "config.yaml").web.enabled is True  # the bundled demo shows it


def test_live_view_is_still_read_as_the_old_name_of_web(caplog):
    data = copy.deepcopy(BUNDLED)
    del data["web"]
    data["live_view"] = {"enabled": True, "port": 8123, "refresh_s": 1}
    with caplog.at_level(logging.WARNING, logger="monitor"):
        config = parse_config(data)
    assert config.web.enabled and config.web.port == 8123 and config.web.refresh_s == 1
    assert "live_view: deprecated name of the web section; rename it to web" in caplog.text
    data["live_view"]["port"] = 70000
    with pytest.raises(ConfigError, match=r"live_view\.port: Input should be less than or equal to 65535"):
        parse_config(data)
    data["web"] = {"enabled": False}
    with pytest.raises(ConfigError, match="live_view: the old name of web: give only web"):
        parse_config(data)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "monitor.local"])
def test_a_non_loopback_bind_without_a_token_is_refused(host):
    data = copy.deepcopy(BUNDLED)
    data["web"]["host"] = host
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert error.value.problems == [
        f"web: host {host} is not a loopback address: give token ({{file: web-token}}) or bind 127.0.0.1"
    ]
    data["web"]["enabled"] = False
    assert parse_config(data).web.host == host  # off: nothing listens
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        data["web"].update(enabled=True, host=loopback)
        assert parse_config(data).web.host == loopback


def test_monitor_check_refuses_a_non_loopback_bind_without_a_token(tmp_path):
    data = copy.deepcopy(BUNDLED)
    data["web"]["host"] = "0.0.0.0"
    result = monitor_cli("check", "--no-models", "--config", str(write_config(tmp_path, data)))
    assert result.returncode == 2
    assert "web: host 0.0.0.0 is not a loopback address" in result.stderr


def test_web_token_problems_name_web_token(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "short").write_text("abc\n")
    (tmp_path / "good").write_text("0123456789abcdef0123\n")
    data = copy.deepcopy(BUNDLED)
    data["web"]["host"] = "0.0.0.0"
    for token, expected in (
        ({"file": "short"}, "web.token: 3 characters; use at least 16 (openssl rand -hex 16)"),
        ({"file": "missing"}, f"web.token: cannot read secret file {tmp_path / 'missing'}: No such file or directory"),
        ({"env": "NO_SUCH_WEB_TOKEN"}, "web.token: environment variable NO_SUCH_WEB_TOKEN is not set"),
    ):
        data["web"]["token"] = token
        with pytest.raises(ConfigError) as error:
            parse_config(data).web.reveal_token()
        assert error.value.problems == [expected]
    data["web"]["token"] = {"file": "good"}
    assert parse_config(data).web.reveal_token() == "0123456789abcdef0123"
