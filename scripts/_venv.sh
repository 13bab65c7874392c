# Shared by scripts/demo and scripts/test: make .venv and install the project into it.
# Usage: . scripts/_venv.sh EXTRA   (EXTRA: "" for the app alone, "test" for the test tools)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extra=${1:-}
stamp=".venv/.installed-${extra:-app}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extra:+[$extra]}"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
# Compiled modules are kept, out of the tree, even where PYTHONDONTWRITEBYTECODE is set (as on
# our machines): the tests start hundreds of manage.py processes, and each would otherwise
# compile the project's modules again (~0.15 s of CPU apiece).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"
