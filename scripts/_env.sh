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
export PATH="$VENV/bin:$PATH"
