"""One monitor per state dir: a second `monitor run` on the same state dir (and client_id) is refused at start with
the dir and the holder's pid, also after the first one reloaded; once the first one stops, it may start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import cut_clip, street_config, write_config


def test_a_second_lock_on_the_same_state_dir_is_refused_with_the_holders_pid(tmp_path):
    from monitor.instance import StateDirInUse, StateDirLock

    first = StateDirLock(tmp_path / "state").acquire()
    with pytest.raises(StateDirInUse) as refused:
        StateDirLock(tmp_path / "state").acquire()
    assert f"state_dir {tmp_path / 'state'} is in use by another monitor (pid {os.getpid()}" in str(refused.value)
    first.release()
    StateDirLock(tmp_path / "state").acquire().release()  # free again


def start_monitor(path, log_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(path)], stdout=log_path.open("w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "YOLO_OFFLINE": "1"})


def test_a_second_monitor_on_the_same_state_dir_is_refused_and_the_first_goes_on(tmp_path, broker, subscriber_factory, clip):
    data = street_config(broker.port, source=str(cut_clip(clip, tmp_path / "short.avi", count=20)), loop=True, realtime=True, fps=2)
    data["models"]["person"].update(imgsz=320)
    path = write_config(tmp_path, data)
    status = subscriber_factory(broker.port, ["monitor/status", "monitor/street/counts"])
    started = []

    def monitor_process(log_name: str) -> subprocess.Popen:
        started.append(start_monitor(path, tmp_path / log_name))
        return started[-1]

    first = monitor_process("first.log")
    try:
        assert status.wait_for(lambda s: s.on("monitor/status")[-1:] == ["online"], 120), (tmp_path / "first.log").read_text()
        second = monitor_process("second.log")
        assert second.wait(60) == 1
        refusal = (tmp_path / "second.log").read_text()
        state = tmp_path / "state"
        assert f"state_dir {state} is in use by another monitor (pid {first.pid}" in refusal, refusal

        first.send_signal(signal.SIGHUP)  # a reload keeps the lock
        log = tmp_path / "first.log"
        assert status.wait_for(lambda s: "reload: restarting the pipeline" in log.read_text(), 60), log.read_text()[-2000:]
        counted = len(status.on("monitor/street/counts"))
        assert status.wait_for(lambda s: len(s.on("monitor/street/counts")) > counted + 2, 120), "the reloaded pipeline counts"
        third = monitor_process("third.log")
        assert third.wait(120) == 1 and f"(pid {first.pid}" in (tmp_path / "third.log").read_text()
        assert first.poll() is None, "the first monitor runs on"
        assert status.on("monitor/status") == ["online"], "no flapping: the refused monitors never connected"

        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
        fourth = monitor_process("fourth.log")
        try:
            assert status.wait_for(lambda s: s.on("monitor/status") == ["online", "offline", "online"], 120)
        finally:
            fourth.send_signal(signal.SIGTERM)
            assert fourth.wait(60) == 0
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
