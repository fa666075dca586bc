"""Checks that the default install pulls no GPU packages: asks pip what `pip install .` and
`pip install -r requirements/default.txt` would install into an empty environment (a dry run that
installs nothing) and fails if PyTorch, triton or any nvidia-*/cuda-* package is among them.

Run by CI; needs the package index. `python scripts/check_install.py`
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
TARGETS = {
    "pip install .": ["."],
    "pip install -r requirements/default.txt": ["-r", "requirements/default.txt"],
}


def would_install(args: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--report", "-", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"pip could not resolve {' '.join(args)}:\n{done.stderr.strip()}")
    report = json.loads(done.stdout)
    return sorted(item["metadata"]["name"].lower() for item in report["install"])


def main() -> int:
    failed = False
    for label, args in TARGETS.items():
        names = would_install(args)
        gpu = [n for n in names if GPU.match(n)]
        print(f"{label}: {len(names)} packages, GPU packages: {', '.join(gpu) or 'none'}")
        failed |= bool(gpu)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
