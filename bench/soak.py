"""Soak: the real ``monitor run`` for a long time on the looped street clip, the broker restarted every few minutes.

    python -m bench.soak --minutes 30 --restart-every 180 --down 10

A persistent subscriber (clean_session False, fixed client id, QoS 1) counts what arrives, deduped by
``seq`` as the README says subscribers should. Every ``--sample`` seconds it records the monitor's RSS
(/proc), the outbox's size (read-only from its SQLite file) and the messages sent (its metrics endpoint).
At the end the monitor is stopped with SIGTERM and the report compares what was sent with what arrived:
missing seqs (must be none), duplicates, outbox peak, RSS first/last/max and its growth per hour over
the second half (after warm-up). Prints a summary; writes bench/results/soak-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from bench.loopback import Broker, free_port
from bench.report import write_results

ROOT = Path(__file__).resolve().parent.parent


def persistent_broker(workdir: Path) -> Broker:
    """Mosquitto with persistence, so a subscriber's session (and its queued messages) survives restarts."""
    store = workdir / "mosquitto-data"
    store.mkdir()
    return Broker(
        workdir,
        f"user root\npersistence true\npersistence_location {store}/\nautosave_interval 5\nmax_queued_messages 100000",
    )


class SeqCounter:
    """A persistent-session subscriber that dedupes counts messages by (camera, seq)."""

    def __init__(self, port: int):
        self.seen: dict[str, set[int]] = {}
        self.received = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-subscriber", clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("monitor/+/counts", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        data = json.loads(message.payload)
        with self.lock:
            self.received += 1
            self.seen.setdefault(data["camera"], set()).add(int(data["seq"]))

    def unique(self) -> int:
        with self.lock:
            return sum(len(s) for s in self.seen.values())

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def outbox_size(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    except sqlite3.Error:
        return -1


def metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return float("nan")
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def write_config(workdir: Path, args: argparse.Namespace, mqtt_port: int, metrics_port: int) -> Path:
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["mqtt"].update(port=mqtt_port, client_id="soak-monitor", heartbeat_s=10)
    data["metrics"].update(port=metrics_port)
    data["state_dir"] = str(workdir / "state")
    data["logging"] = {"level": "WARNING", "interval_s": 60}
    model = data["models"]["person"]
    model.update(path=str(ROOT / "models" / "person-fall.pt"), imgsz=args.imgsz)
    street = data["cameras"]["street"]
    street.update(source=str(ROOT / "data" / "vtest.avi"), loop=True, realtime=True, fps=args.fps)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    broker = persistent_broker(workdir).start()
    metrics_port = free_port()
    config_path = write_config(workdir, args, broker.port, metrics_port)
    outbox_path = workdir / "state" / "outbox-soak-monitor.sqlite"
    subscriber = SeqCounter(broker.port)
    env = {**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    log = (workdir / "monitor.log").open("w")
    monitor = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(config_path)], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    samples, restarts, outbox_peak = [], 0, 0
    started = time.monotonic()
    end = started + args.minutes * 60
    next_restart = started + args.restart_every
    try:
        while time.monotonic() < end:
            if monitor.poll() is not None:
                raise RuntimeError(f"the monitor exited ({monitor.returncode}); see {workdir / 'monitor.log'}")
            if time.monotonic() >= next_restart:
                broker.stop()
                down_until = time.monotonic() + args.down
                while time.monotonic() < down_until:
                    outbox_peak = max(outbox_peak, outbox_size(outbox_path))
                    time.sleep(0.5)
                broker.start()
                restarts += 1
                next_restart = time.monotonic() + args.restart_every
            size = outbox_size(outbox_path)
            outbox_peak = max(outbox_peak, size)
            samples.append({
                "t_s": round(time.monotonic() - started, 1),
                "rss_mb": round(rss_mb(monitor.pid), 1),
                "outbox": size,
                "sent": metric(metrics_port, 'monitor_mqtt_messages_total{result="sent"}'),
                "received_unique": subscriber.unique(),
            })
            print(json.dumps(samples[-1]), flush=True)
            time.sleep(min(args.sample, max(0.1, end - time.monotonic())))
    finally:
        monitor.send_signal(signal.SIGTERM)
        try:
            exit_code = monitor.wait(60)
        except subprocess.TimeoutExpired:
            monitor.kill()
            exit_code = -9
    with sqlite3.connect(outbox_path) as db:
        sent_seq = {camera: seq for camera, seq in db.execute("SELECT camera, seq FROM seqs")}
        left = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    time.sleep(3)  # the last deliveries
    subscriber.stop()
    broker.stop()
    return report(args, samples, subscriber, sent_seq, left, outbox_peak, restarts, exit_code, workdir)


def report(args, samples, subscriber, sent_seq, left, outbox_peak, restarts, exit_code, workdir) -> dict:
    missing = {
        camera: sorted(set(range(min(subscriber.seen.get(camera, {1})), last + 1)) - subscriber.seen.get(camera, set()))
        for camera, last in sent_seq.items()
    }
    rss = [s["rss_mb"] for s in samples]
    second_half = samples[len(samples) // 2 :]
    growth = 0.0
    if len(second_half) >= 2 and second_half[-1]["t_s"] > second_half[0]["t_s"]:
        hours = (second_half[-1]["t_s"] - second_half[0]["t_s"]) / 3600
        growth = (second_half[-1]["rss_mb"] - second_half[0]["rss_mb"]) / hours
    return {
        "minutes": args.minutes,
        "restart_every_s": args.restart_every,
        "broker_down_s": args.down,
        "broker_restarts": restarts,
        "counts_messages_sent": sum(sent_seq.values()),
        "counts_received_total": subscriber.received,
        "counts_received_unique": subscriber.unique(),
        "duplicates": subscriber.received - subscriber.unique(),
        "missing_seqs": {c: m[:20] for c, m in missing.items()},
        "missing_count": sum(len(m) for m in missing.values()),
        "outbox_peak": outbox_peak,
        "outbox_left_after_stop": left,
        "rss_mb_first": rss[0] if rss else None,
        "rss_mb_last": rss[-1] if rss else None,
        "rss_mb_max": max(rss) if rss else None,
        "rss_growth_mb_per_hour_second_half": round(growth, 1),
        "monitor_exit_code": exit_code,
        "workdir": str(workdir),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--restart-every", type=float, default=180, help="seconds between broker restarts")
    parser.add_argument("--down", type=float, default=10, help="seconds the broker stays down each time")
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    parser.add_argument("--fps", type=float, default=5)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = run(args)
    write_results("soak-latest", result)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
