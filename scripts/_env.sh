# Sourced by scripts/demo, scripts/test and scripts/bench: creates the
# project's virtual environment on first use and keeps it installed.
# Needs only Python 3.11+ and git.
set -euo pipefail
MU_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$MU_ROOT/.venv"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "mu needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
    exit 1
fi
stamp="$VENV/.mu-installed"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$MU_ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$MU_ROOT[chain,test]"
    touch "$stamp"
fi
# Byte-compile mu's own modules, as installing a wheel does and an editable
# install does not: where PYTHONDONTWRITEBYTECODE is set (as on the machines
# this project runs on) nothing else would, and every process would compile
# them again (0.5 s of a `mu node`'s start, 10 ms of each `mu` command's).
# Only a speed-up: a checkout it cannot write to runs as before.
"$VENV/bin/python" -m compileall -q "$MU_ROOT/node" "$MU_ROOT/protocol" "$MU_ROOT/scripts" >/dev/null 2>&1 || true
export PATH="$VENV/bin:$PATH"
