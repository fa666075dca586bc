#!/usr/bin/env bash
# Creates .venv and installs Styringsbot with its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Styringsbot trenger Python 3.11 eller nyere; sett PYTHON=/sti/til/python3.11." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# The CPU build of PyTorch first: an unpinned torch (pulled in by sentence-transformers) would
# bring several GB of CUDA packages.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "Installert i .venv; kommandoen er .venv/bin/styringsbot." >&2
