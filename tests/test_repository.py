"""The repository tracks source, not what a run leaves behind (journals, model files)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_SUFFIXES = (".db", ".db-wal", ".db-shm", ".safetensors", ".blob", ".out", ".ef")


def test_no_runtime_data_is_tracked() -> None:
    """`git ls-files` lists no journal, spool, outbox or model file outside `tests/`."""
    # Prepare
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    # Execute
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                            check=True).stdout.decode().split("\0")

    # Assert
    assert [p for p in listed if p.endswith(RUNTIME_SUFFIXES) and not p.startswith("tests/")] == []


def test_every_package_is_in_the_wheel() -> None:
    """Each folder with an `__init__.py` is listed in pyproject's packages: an editable install
    finds any of them, a built wheel only the listed ones."""
    # Prepare
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]

    # Execute
    found = {".".join((package, *init.parent.relative_to(ROOT / folder).parts))
             for package, folder in config["package-dir"].items()
             for init in (ROOT / folder).rglob("__init__.py")}

    # Assert
    assert sorted(found - set(config["packages"])) == []
