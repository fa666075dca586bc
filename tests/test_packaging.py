"""The install: what pyproject.toml declares, what the lock files pin, and what scripts/setup.sh
does when it runs again.

The lock files are read as text; whether a real resolution of the default install pulls GPU
packages is checked against the package index by `scripts/check_install.py`, which CI runs.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
GPU = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")


def pins(lock: str) -> dict[str, str]:
    """name → version of the lines of a lock file that apply on some platform we support."""
    found: dict[str, str] = {}
    for line in (REPO_ROOT / "requirements" / lock).read_text(encoding="utf-8").splitlines():
        if not line or line[0] in "# ":
            continue
        requirement = Requirement(line)
        if requirement.marker and "never" in str(requirement.marker):
            continue  # left out on purpose (PyTorch: installed first, as a CPU build)
        (spec,) = requirement.specifier
        found[canonicalize_name(requirement.name)] = spec.version
    return found


def declared(*groups: str) -> list[Requirement]:
    """The requirements of the default install ("") and of the named extras."""
    project = PYPROJECT["project"]
    lines = list(project["dependencies"]) if "" in groups else []
    for extra in groups:
        if extra:
            lines += project["optional-dependencies"][extra]
    return [Requirement(x) for x in lines if not x.startswith("styringsbot[")]


@pytest.mark.parametrize(
    ("lock", "groups"),
    [("default.txt", ("",)), ("dev.txt", ("", "dev", "fit", "postgres", "sentence-transformers"))],
)
def test_every_declared_dependency_is_pinned_within_its_range(lock: str, groups: tuple[str, ...]):
    pinned = pins(lock)
    for requirement in declared(*groups):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is declared but not in requirements/{lock}: run lock.sh"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pinned[name]}, outside {requirement}: run lock.sh"
        )


def test_the_default_lock_holds_no_gpu_or_optional_packages():
    pinned = pins("default.txt")
    assert not [name for name in pinned if GPU.match(name)]
    for optional in ("sentence-transformers", "scikit-learn", "transformers", "psycopg", "openai"):
        assert optional not in pinned
    # The dev lock has the optional backend, but PyTorch only as a CPU build installed first.
    dev = pins("dev.txt")
    assert "sentence-transformers" in dev and "scikit-learn" in dev
    assert not [name for name in dev if GPU.match(name)]


def _third_party_imports() -> dict[str, set[str]]:
    """Each module imported by the product's code (bot/, ingest/) → the files importing it."""
    stdlib = sys.stdlib_module_names
    found: dict[str, set[str]] = {}
    for package in ("bot", "ingest"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    if name.split(".")[0] not in stdlib | {"bot", "ingest"}:
                        found.setdefault(name, set()).add(path.name)
    return found


def _distribution_of(module: str) -> str:
    """The installed distribution that provides `module` (namespace packages included)."""
    top = module.split(".")[0]
    candidates = md.packages_distributions().get(top, [])
    if len(candidates) > 1:  # a namespace package: find who ships the dotted path
        prefix = "/".join(module.split(".")[:3])
        candidates = [
            d
            for d in candidates
            if any(str(f).startswith(prefix) for f in md.distribution(d).files or ())
        ]
    assert candidates, f"no installed distribution provides {module}"
    return canonicalize_name(candidates[0])


def test_every_imported_package_is_declared():
    everything = {canonicalize_name(r.name) for r in declared("", *_extras())}
    default = {canonicalize_name(r.name) for r in declared("")}
    optional = {"sentence-transformers", "scikit-learn", "psycopg", "langchain-openai"}
    for module, files in _third_party_imports().items():
        dist = _distribution_of(module)
        assert dist in everything, f"{module} (from {dist}), imported in {files}, is not declared"
        assert dist in default or dist in optional, f"{dist} is imported but only in an extra"


def _extras() -> list[str]:
    return list(PYPROJECT["project"]["optional-dependencies"])


def test_the_lock_applies_to_this_interpreter():
    """The pins of this platform and Python are what is installed here (after setup.sh --dev)."""
    environment = default_environment()
    lock = REPO_ROOT / "requirements" / "dev.txt"
    mismatched = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        if not line or line[0] in "# ":
            continue
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        (spec,) = requirement.specifier
        try:
            installed = md.version(requirement.name)
        except md.PackageNotFoundError:
            mismatched.append(f"{requirement.name} missing")
            continue
        if installed != spec.version:
            mismatched.append(f"{requirement.name} {installed} (lock: {spec.version})")
    assert not mismatched, f"run bash scripts/setup.sh --dev: {mismatched}"


# -- scripts/setup.sh on a second run ------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what setup.sh reads, with a stand-in .venv whose python records its calls
    instead of installing (the real install is what CI and the README commands do)."""
    for name in ("pyproject.toml", "requirements", "scripts"):
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    fake = bin_ / "python"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/calls"\n')
    fake.chmod(0o755)
    (bin_ / "styringsbot").write_text("#!/bin/sh\n")
    (bin_ / "styringsbot").chmod(0o755)
    return tmp_path


def setup(project: Path, *args: str) -> tuple[int, list[str], str]:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "scripts/setup.sh", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = project / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return done.returncode, lines, done.stderr


def fingerprint(project: Path, lock: str) -> str:
    text = (project / "pyproject.toml").read_bytes() + (
        project / "requirements" / lock
    ).read_bytes()
    return hashlib.sha256(text).hexdigest()[:16]


def test_setup_installs_from_the_lock_then_leaves_an_up_to_date_venv_alone(project: Path):
    status, calls, _ = setup(project, "--dev")
    assert status == 0
    installs = [c for c in calls if c.startswith("-m pip install")]
    assert any("-r requirements/dev.txt" in c for c in installs), calls
    assert any("--no-deps -e ." in c for c in installs), calls
    stamp = (project / ".venv" / ".styringsbot-installed").read_text().split()
    assert stamp == ["dev", fingerprint(project, "dev.txt")]

    # Again, offline (PIP_NO_INDEX=1): nothing is installed, for either mode.
    for mode in (("--dev",), ()):
        status, calls, stderr = setup(project, *mode)
        assert (status, calls) == (0, []), stderr
        assert "oppdatert" in stderr

    # A changed lock installs again.
    lock = project / "requirements" / "dev.txt"
    lock.write_text(lock.read_text() + "\n# changed\n")
    status, calls, _ = setup(project, "--dev")
    assert status == 0 and any("-r requirements/dev.txt" in c for c in calls)


def test_setup_refuses_an_unknown_option(project: Path):
    status, calls, stderr = setup(project, "--everything")
    assert status == 2 and calls == []
    assert "Bruk" in stderr
