#!/usr/bin/env bash
# Installs what is needed, prepares the model (monitor check builds its export), starts a local Mosquitto (unless
# one already listens on 1883), runs the monitor on the bundled config.yaml and prints the counts it publishes as they arrive. Stops after the clip or on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the model's engine (engine: auto; on a CPU the OpenVINO export, built once into state/cache: tens of seconds)
.venv/bin/monitor check --config config.yaml
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    /usr/sbin/mosquitto -p 1883 >/dev/null 2>&1 & pids+=($!)
    sleep 0.5
fi
mosquitto_sub -h 127.0.0.1 -p 1883 -v -t 'monitor/status' -t 'monitor/+/counts' -t 'monitor/+/events' & pids+=($!)
.venv/bin/monitor run --config config.yaml "$@"
sleep 0.5
