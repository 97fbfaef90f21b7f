"""Safety events on the street clip: how many start, per minute, without a track id, and how many last 2 s or less.

    python -m bench.events --zones path --every 1,3

The whole monitor runs over the clip (``realtime: false``: every frame it is given) with one ``intrusion``
rule (``--per object`` by default) on the given zones and the bundled model, publishing to a real Mosquitto;
the events come from a subscriber. ``--every 3`` first writes every third frame of the clip (losslessly, at a
third of its rate): what a host too slow for every frame processes, where the tracker loses and renames people
more often. Prints a table and writes bench/results/events-latest.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path

import cv2

from bench.loopback import Broker
from bench.report import markdown_table, write_results
from bench.run import ROOT, load_bench_config

SHORT_S = 2.0  # an event this short is hardly something a person can act on


def write_every(source: str, every: int, path: Path, frames: int = 0) -> Path:
    """Every ``every``-th frame of ``source`` (of its first ``frames``; 0: all) as a lossless clip at 1/every of its rate."""
    capture = cv2.VideoCapture(source)
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    writer, index = None, 0
    while not frames or index < frames:
        ok, image = capture.read()
        if not ok:
            break
        if index % every == 0:
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps / every, image.shape[1::-1])
            writer.write(image)
        index += 1
    capture.release()
    writer.release()
    return path


class EventLog:
    """A real MQTT subscriber that keeps every event message of the run."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.events: list[dict] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.events.append(json.loads(message.payload))

    def wait_for_end(self, starts: int, timeout: float = 10.0) -> None:
        """Every start has its end (the monitor ends what is open when the file ends)."""
        for _ in range(int(timeout * 20)):
            with self._lock:
                if sum(e["type"] == "end" for e in self.events) >= starts:
                    return
            threading.Event().wait(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_clip(clip: Path, args: argparse.Namespace, port: int) -> tuple[list[dict], float]:
    """The events of one run, and the clip's length in seconds of video."""
    from monitor.pipeline import Monitor

    config, model_name, model, camera_name, camera = load_bench_config(Path(args.config), args.imgsz, "none")
    rule = {"name": "intrusion", "rule": "intrusion", "zones": args.zones.split(","), "classes": ["person"], "per": args.per,
            "min_seconds": args.min_seconds}
    camera = camera.model_validate({**camera.model_dump(), "source": str(clip), "realtime": False, "loop": False, "safety": [rule]})
    app = config.model_copy(update={
        "mqtt": config.mqtt.model_copy(update={"port": port, "client_id": f"bench-events-{clip.stem}"}),
        "metrics": config.metrics.model_copy(update={"enabled": False}),
        "evidence": config.evidence.model_copy(update={"enabled": False}),
        "models": {model_name: model},
        "cameras": {camera_name: camera},
    })
    log = EventLog(port, f"{config.mqtt.prefix}/{camera_name}/events")
    monitor = Monitor(app)
    monitor.start()
    monitor.wait(threading.Event())
    monitor.stop()
    starts = [e for e in log.events if e["type"] == "start"]
    log.wait_for_end(len(starts))
    log.close()
    capture = cv2.VideoCapture(str(clip))
    seconds = capture.get(cv2.CAP_PROP_FRAME_COUNT) / (capture.get(cv2.CAP_PROP_FPS) or 10.0)
    capture.release()
    return log.events, seconds


def summarise(every: int, events: list[dict], seconds: float) -> dict:
    starts = [e for e in events if e["type"] == "start"]
    ends = {e["id"]: e for e in events if e["type"] == "end"}
    durations = [ends[s["id"]]["duration_s"] for s in starts if s["id"] in ends]
    return {
        "every": every,
        "video_s": round(seconds, 1),
        "starts": len(starts),
        "starts_per_min": round(len(starts) / seconds * 60, 1),
        "untracked_starts": sum(1 for s in starts if not s["track_ids"]),
        "short_events": sum(1 for d in durations if d <= SHORT_S),
        "median_duration_s": sorted(durations)[len(durations) // 2] if durations else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--zones", default="path", help="the intrusion rule's zones (comma-separated)")
    parser.add_argument("--per", choices=["object", "zone"], default="object")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="the rule's min_seconds (1.0: the default)")
    parser.add_argument("--every", default="1,3", help="process every Nth frame of the clip (comma-separated runs)")
    parser.add_argument("--frames", type=int, default=0, help="only the clip's first N frames (0: all of it)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    args = parser.parse_args(argv)
    _, _, _, _, camera = load_bench_config(Path(args.config), args.imgsz, "none")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        broker = Broker(Path(scratch)).start()
        try:
            for every in (int(n) for n in args.every.split(",")):
                clip = write_every(str(camera.source), every, Path(scratch) / f"every{every}.avi", args.frames)
                rows.append(summarise(every, *run_clip(clip, args, broker.port)))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            broker.stop()
    keys = list(rows[0])
    print(markdown_table(keys, [[str(row[k]) for k in keys] for row in rows]))
    write_results("events-latest", {"settings": vars(args), "runs": rows})
    print("written: bench/results/events-latest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
