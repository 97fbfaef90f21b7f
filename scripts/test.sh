#!/usr/bin/env bash
# Installs what the tests need (scripts/setup.sh: Debian packages and the .venv) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
