"""Real services on loopback for the benchmarks and the tests: free ports, a Mosquitto broker, a byte-counting relay."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Broker:
    """A real Mosquitto on a free loopback port; ``restart`` keeps the port (and its persistence, if any)."""

    def __init__(self, workdir: Path, extra_config: str = ""):
        self.port = free_port()
        self.workdir = workdir
        self.extra_config = extra_config
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{self.extra_config}\n")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


class CountingProxy:
    """A TCP relay on a free loopback port that counts the bytes it carries each way (what goes over the wire)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = self.received = 0  # client -> target, target -> client
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="counting-proxy", daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.listener.close()

    def reset(self) -> None:
        with self._lock:
            self.sent = self.received = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            target = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink, upstream in ((client, target, True), (target, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, upstream), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        buffer = bytearray(1 << 20)
        try:
            while n := source.recv_into(buffer):
                sink.sendall(memoryview(buffer)[:n])
                with self._lock:
                    if upstream:
                        self.sent += n
                    else:
                        self.received += n
        except OSError:
            pass
        finally:
            for end in (source, sink):  # one side closed: close the other too (the other pump then ends)
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
