#!/usr/bin/env bash
# Home Assistant 2024.3.3 (the newest release that installs on Python 3.11) in its own virtual environment,
# .venv-ha/, for tests/test_homeassistant_schemas.py: its pins conflict with the monitor's, so it never shares
# .venv. Installed with Home Assistant's own package_constraints.txt (shipped in its wheel), plus josepy<2 (its
# acme dependency breaks with josepy 2) and paho-mqtt 1.6.1 (the MQTT integration's requirement). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
HA_VERSION=2024.3.3
VENV=.venv-ha
PYTHON=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3 )}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import homeassistant.components.mqtt.sensor, homeassistant.const as c; assert c.__version__ == '$HA_VERSION'" 2>/dev/null; then
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --no-deps "homeassistant==$HA_VERSION"
constraints=$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("homeassistant").origin), "package_constraints.txt"))')
"$VENV/bin/pip" install -q -c "$constraints" "homeassistant==$HA_VERSION" "josepy<2" "paho-mqtt==1.6.1"
