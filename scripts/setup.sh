#!/usr/bin/env bash
# Creates .venv and installs Styringsbot from the lock files in requirements/. Safe to run again:
# an environment that is already up to date is left as it is, and then no network is needed.
#
#   bash scripts/setup.sh          the default: the bundled model, Chroma, the channels
#   bash scripts/setup.sh --dev    every extra and the test tools (what the tests and CI use)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=default
case "${1:-}" in
  "") ;;
  --dev) mode=dev ;;
  *) echo "Bruk: bash scripts/setup.sh [--dev]" >&2; exit 2 ;;
esac

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Styringsbot trenger Python 3.11 eller nyere; sett PYTHON=/sti/til/python3.11." >&2
  exit 1
fi

# What was installed, and from which lock: a dev install holds the default one too.
fingerprint() { cat pyproject.toml "requirements/$1.txt" | sha256sum | cut -c1-16; }
stamp=.venv/.styringsbot-installed
if [ -x .venv/bin/styringsbot ] && [ -f "$stamp" ]; then
  have=$(cat "$stamp")
  if [ "$have" = "$mode $(fingerprint "$mode")" ] \
    || { [ "$mode" = default ] && [ "$have" = "dev $(fingerprint dev)" ]; }; then
    echo "Miljøet i .venv er oppdatert." >&2
    exit 0
  fi
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
rm -f "$stamp"
# Modules are compiled when first imported, not all at install (most are never imported).
install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile)
if [ "$mode" = dev ]; then
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    # sentence-transformers needs PyTorch. From PyPI it comes with several GB of CUDA packages;
    # TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gives the CPU build instead.
    "${install[@]}" "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  fi
  "${install[@]}" -r requirements/dev.txt
else
  # The lock is complete for every platform, so pip need not resolve anything again.
  "${install[@]}" --no-deps -r requirements/default.txt
fi
"${install[@]}" --no-deps -e .
if ! .venv/bin/python -m pip check >/dev/null; then
  .venv/bin/python -m pip check >&2
  echo "Installasjonen i .venv er ufullstendig (se over); kjør bash scripts/lock.sh og prøv igjen." >&2
  exit 1
fi
echo "$mode $(fingerprint "$mode")" >"$stamp"
echo "Installert i .venv; kommandoen er .venv/bin/styringsbot." >&2
