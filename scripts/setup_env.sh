#!/usr/bin/env bash
# Creates .venv with Python 3.12 (what the GPU machine runs; jax 0.11.2 needs it) and installs int4jax with the
# test extras. Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  PY=""
  for cand in python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python" /root/.pyenv/versions/3.12.1/bin/python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
      PY="$cand"; break
    fi
  done
  if [ -z "$PY" ]; then
    echo "setup_env.sh: Python 3.12 not found (tried python3.12 and pyenv 3.12.1); jax 0.11.2 needs it" >&2
    exit 1
  fi
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
