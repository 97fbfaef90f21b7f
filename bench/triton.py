"""A real Triton Inference Server on loopback, for the tests and the benchmarks.

The server is the ``tritonserver`` binary (2.51) that PyPI's ``nvidia-pytriton`` wheel bundles, with its
Python backend, run from its own virtual environment (``.venv-triton``, made by scripts/setup.sh from
Debian's /usr/bin/python3: the backend's stub links the system libpython 3.11, and the wheel needs
numpy<2, so it cannot share the monitor's environment). It is started the way pytriton starts it, without
pytriton's Python API: the wheel's libraries on ``LD_LIBRARY_PATH``, the venv's bin first on ``PATH`` (the
stub finds its Python environment there), and a backends folder with the stub for this Python version.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from bench.loopback import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_VENV = ROOT / ".venv-triton"
STUB_PYTHON = "3.11"  # Debian bookworm's /usr/bin/python3, which made SERVER_VENV


class TritonNotInstalled(Exception):
    pass


def server_packages(venv: Path = SERVER_VENV) -> Path:
    """The site-packages that holds pytriton's bundled server."""
    found = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    if not found:
        raise TritonNotInstalled(f"no Triton server in {venv}: run scripts/setup.sh (it installs nvidia-pytriton there)")
    return found[0].parents[3]


class TritonServer:
    """``tritonserver`` on free loopback ports (HTTP, gRPC, metrics) serving ``repository``.

    ``kill`` is a SIGKILL of the server and its backend stubs (a crash); ``start`` again reuses the ports.
    """

    def __init__(self, repository: Path, workdir: Path, venv: Path = SERVER_VENV):
        self.repository = repository
        self.workdir = workdir
        self.venv = venv
        self.packages = server_packages(venv)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.backends = self._backends_folder()

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _backends_folder(self) -> Path:
        """backends/python with the backend library, its utils and the stub for this Python (as pytriton lays it out)."""
        bundled = self.packages / "pytriton" / "tritonserver"
        target = self.workdir / "backends" / "python"
        target.mkdir(parents=True, exist_ok=True)
        for item in (bundled / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, target / item.name)
        shutil.copy2(bundled / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub", target)
        return target.parent

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = str(self.packages / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # the stub's Python is the server venv's, not ours
            env.pop(name, None)
        return env

    def command(self) -> list[str]:
        shm_prefix = f"monitor_triton_{os.getpid()}_{self.http_port}_{self.starts}_"
        return [
            str(self.packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.backends}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--allow-cpu-metrics=false", "--metrics-interval-ms=500",
            "--exit-timeout-secs=5", "--log-verbose=0",
        ]  # fmt: skip

    def start(self, timeout: float = 120.0) -> TritonServer:
        self.starts += 1
        log = (self.workdir / f"tritonserver-{self.starts}.log").open("w")
        self.process = subprocess.Popen(
            self.command(), env=self._environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        wait_for_port(self.grpc_port)
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = (self.workdir / f"tritonserver-{self.starts}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the server and its Python-backend stubs (their own process group), as a crash would."""
        self._signal_group(signal.SIGKILL)

    def stop(self) -> None:
        self._signal_group(signal.SIGTERM, wait_s=15)

    def _signal_group(self, sig: int, wait_s: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass
        self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        """A killed Python backend leaves its shared-memory regions behind in /dev/shm."""
        prefix = f"monitor_triton_{os.getpid()}_{self.http_port}_"
        for leftover in Path("/dev/shm").glob(prefix + "*"):
            leftover.unlink(missing_ok=True)

    def metrics(self) -> dict[str, float]:
        """Triton's own Prometheus metrics, ``name{labels}`` -> value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def model_figures(self, model: str) -> dict[str, float]:
        """Requests, inferences (frames) and executions (batches) of a model since the server started."""
        values = self.metrics()
        pick = lambda name: sum(v for k, v in values.items() if k.startswith(f'{name}{{model="{model}"'))  # noqa: E731
        return {
            "requests": pick("nv_inference_request_success"),
            "failed": pick("nv_inference_request_failure"),
            "frames": pick("nv_inference_count"),
            "executions": pick("nv_inference_exec_count"),
        }
