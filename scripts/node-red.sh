#!/usr/bin/env bash
# Node-RED 4 from npm into a cache folder (default ~/.cache/monitor-tests/node-red), for tests/test_node_red.py and
# for trying examples/node-red/ by hand: node <prefix>/node_modules/node-red/red.js. Idempotent.
set -euo pipefail
PREFIX=${NODE_RED_PREFIX:-$HOME/.cache/monitor-tests/node-red}
if [ -f "$PREFIX/node_modules/node-red/red.js" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "npm is missing: apt-get install nodejs npm" >&2; exit 1; }
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "node-red@4"
