"""The fleet modes of ``python -m bench.run --fleet KxN``: K monitor processes (camera hosts) with N cameras each,
on the same frames, either each with its own local model (``local-KxN``) or all against one Triton server
(``triton-KxN``: PyPI's server with the Python backend running the repository ``monitor triton-repo`` writes).

The K processes load their models, say ``ready``, and start together on ``go``. Per mode: total fps (the sum of
the hosts'), capture-to-publish latency over every frame of every host, camera-host CPU time per frame (the
monitor processes), the Triton server's CPU time per frame (server and backend stubs), the bytes per frame on
the wire to and from Triton (a counting relay in front of its gRPC port) and the mean batch Triton ran (from its
own metrics). ``fps_vs_local`` is triton-KxN's fps over local-KxN's in the same repeat.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.loopback import CountingProxy
from bench.triton import TritonServer

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "bench-model"
PATTERN = re.compile(r"^(local|triton)-(\d+)x(\d+)$")


def fleet_modes(spec: str) -> list[str]:
    """``2x2`` -> local-2x2 and triton-2x2."""
    if not spec:
        return []
    hosts, cameras = (int(n) for n in spec.lower().split("x"))
    return [f"local-{hosts}x{cameras}", f"triton-{hosts}x{cameras}"]


def is_fleet_mode(mode: str) -> bool:
    return PATTERN.match(mode) is not None


class TritonSide:
    """One Triton server for the whole benchmark, behind a byte-counting relay."""

    def __init__(self, model: Path, imgsz: int, threads: int, max_batch: int):
        from monitor.tools.triton_repo import RepoSettings, write_repository

        self.workdir = Path(tempfile.mkdtemp(prefix="bench-triton-"))
        settings = RepoSettings(model=model, out=self.workdir / "repository", name=MODEL_NAME, imgsz=imgsz,
                                max_batch=max(16, max_batch), backend="python", threads=threads)  # fmt: skip
        write_repository(settings)
        self.server = TritonServer(settings.out, self.workdir).start()
        self.proxy = CountingProxy(self.server.grpc_port).start()
        self.url = f"grpc://127.0.0.1:{self.proxy.port}"

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """User and system time of the server and its backend stubs (its child processes) so far."""
        pids = [self.server.process.pid] + _children(self.server.process.pid)
        return sum(_cpu_of(pid) for pid in pids)


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Host:
    """One monitor process of a fleet mode: its stdout read on a thread (so a full pipe never blocks it), stderr to a file."""

    def __init__(self, command: list[str]):
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines: list[str] = []
        self.said_ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # Ultralytics prints to stdout too
            self.lines.append(line)
            if line.strip() == "ready":
                self.said_ready.set()
        self.said_ready.set()  # or ended

    def ready(self, timeout: float) -> bool:
        return self.said_ready.wait(timeout) and any(line.strip() == "ready" for line in self.lines)

    def go(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, mode: str) -> dict:
        self.reader.join(30)
        found = [line for line in self.lines if line.startswith("{")]
        if self.process.returncode != 0 or not found:
            raise RuntimeError(f"{mode}: a host failed (exit {self.process.returncode}):\n{self.tail()}")
        return json.loads(found[-1])

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def measure_fleet(args, mode: str, mqtt_port: int, triton: TritonSide | None, child_args: list[str]) -> dict:
    kind, hosts, cameras = PATTERN.match(mode).groups()
    command = [sys.executable, "-m", "bench.run", "--child", f"monitor-{cameras}", "--mqtt-port", str(mqtt_port), "--barrier"]
    command += child_args + (["--triton-url", triton.url, "--triton-model", MODEL_NAME] if kind == "triton" else [])
    fleet = [Host(command) for _ in range(int(hosts))]
    served = triton if kind == "triton" else None
    try:
        for host in fleet:  # every host has loaded its model (or connected to Triton)
            if not host.ready(timeout=600):
                raise RuntimeError(f"{mode}: a host did not start:\n{host.tail()}")
        if served:
            served.proxy.reset()
        before = _server_figures(served) if served else {}
        for host in fleet:
            host.go()
        _wait_for(fleet, served, args.frames * 60 + 300)
        results = [host.result(mode) for host in fleet]
        after = _server_figures(served) if served else {}
    finally:
        for host in fleet:
            host.close()
    return combine(results, int(hosts), before, after)


def _server_figures(triton: TritonSide) -> dict:
    figures = triton.server.model_figures(MODEL_NAME)
    return {**figures, "cpu": triton.cpu_seconds(), "wire": triton.proxy.sent + triton.proxy.received}


def _wait_for(fleet: list[Host], triton: TritonSide | None, timeout: float) -> None:
    """Until every host is done; a Triton server that died meanwhile ends the mode (its hosts would wait forever)."""
    deadline = time.monotonic() + timeout
    while any(host.process.poll() is None for host in fleet):
        if triton and triton.server.process.poll() is not None:
            raise RuntimeError(f"the Triton server died (exit {triton.server.process.returncode}):\n{triton.server.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the hosts ran longer than {timeout:.0f} s")
        time.sleep(0.5)


def combine(results: list[dict], hosts: int, before: dict, after: dict) -> dict:
    from bench.run import percentile

    frames = sum(r["frames"] for r in results)
    latencies = [v for r in results for v in r["latencies"]]
    mqtt = [v for r in results for v in r["mqtt_latencies"]]
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    fps = sum(r["fps"] for r in results)
    out = {
        "hosts": hosts,
        "frames": frames,
        "seconds": max(r["seconds"] for r in results),
        "fps": round(fps, 3),
        "fps_per_core": round(fps / (os.cpu_count() or 1), 3),
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p99_ms": ms(percentile(latencies, 99)),
        "mqtt_latency_p50_ms": ms(percentile(mqtt, 50)),
        "mqtt_latency_p99_ms": ms(percentile(mqtt, 99)),
        "cpu_s_per_frame": round(sum(r["cpu_s"] for r in results) / frames, 4),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }
    if before:
        executions = after["executions"] - before["executions"]
        out.update(
            server_cpu_s_per_frame=round((after["cpu"] - before["cpu"]) / frames, 4),
            wire_kb_per_frame=round((after["wire"] - before["wire"]) / frames / 1024, 1),
            triton_batch_mean=round((after["frames"] - before["frames"]) / executions, 2) if executions else None,
        )
    return out


def add_fleet_ratios(summary: dict[str, dict], runs: list[dict]) -> None:
    """triton-KxN's fps over local-KxN's, per repeat, the median."""
    by_repeat: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_repeat.setdefault(run["repeat"], {})[run["mode"]] = run
    for mode, row in summary.items():
        if not mode.startswith("triton-"):
            continue
        local = mode.replace("triton-", "local-", 1)
        ratios = [rep[mode]["fps"] / rep[local]["fps"] for rep in by_repeat.values() if mode in rep and local in rep]
        row["fps_vs_local"] = round(statistics.median(ratios), 3) if ratios else None
