#!/usr/bin/env bash
# Installs what is missing (nothing, if .venv is up to date), then runs the linters and the whole
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/pytest -q "$@"
