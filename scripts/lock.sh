#!/usr/bin/env bash
# Refreshes the lock files in requirements/ from pyproject.toml: the newest versions that satisfy
# it, for every platform and Python ≥ 3.11. Needs uv (`pip install uv`); pass `--upgrade` to move
# every pin to the newest release, or `--upgrade-package NAME` for one.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
compile=("$uv" pip compile pyproject.toml --universal --python-version 3.11 --quiet "$@")
# What `scripts/setup.sh` installs: the default, no PyTorch.
"${compile[@]}" -o requirements/default.txt
# What `scripts/test.sh` and CI install: every extra and the test tools. PyTorch is left out and
# installed first, as a CPU build (see requirements/torch-separately.txt).
"${compile[@]}" --extra dev --override requirements/torch-separately.txt -o requirements/dev.txt
echo "requirements/default.txt and requirements/dev.txt are up to date with pyproject.toml." >&2
