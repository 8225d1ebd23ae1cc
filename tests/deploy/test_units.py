"""The shipped systemd units: they load cleanly in systemd, score as hardened, and name the
configuration exit codes that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedstream.install import render_unit
from fedstream.shared.errors import REASONS

UNITS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(ANALYZE is None,
                                   reason="systemd-analyze is not installed")


def _settings(unit: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, in order (a key may repeat, as systemd allows)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";", "[")):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _rendered(unit: Path, into: Path) -> Path:
    """A copy of `unit` as `fedstream install` writes it for this venv (verify checks that
    ExecStart's binary exists and is executable)."""
    copy = into / unit.name  # verify wants a unit's own name
    copy.write_text(render_unit(unit.read_text(), sys.prefix))
    return copy


def test_both_units_are_shipped() -> None:
    """The edge and the cloud each have a unit."""
    # Assert
    assert [u.name for u in UNITS] == ["fedstream-cloud.service", "fedstream-edge.service"]


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_without_a_warning(unit: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` loads the unit and has nothing to say (an unknown key or a
    bad value is only a warning there, so any output fails the test)."""
    # Prepare
    copy = _rendered(unit, tmp_path)

    # Execute
    done = subprocess.run([str(ANALYZE), "verify", "--man=no", str(copy)],
                          capture_output=True, text=True, timeout=60, check=False)

    # Assert
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_exposure_is_at_most_two(unit: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the unit 2.0 or better (it was 8.4)."""
    # Execute
    done = subprocess.run([str(ANALYZE), "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)

    # Assert
    level = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([0-9.]+)",
                      done.stdout)
    assert level is not None, done.stdout + done.stderr
    assert float(level.group(1)) <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_speaks_notify_and_stops_restarting_on_config_errors(unit: Path) -> None:
    """Type=notify with the main process only and a watchdog; no restart for exactly the
    configuration exit codes (10-29) that shared/errors.py defines."""
    # Prepare
    config_codes = sorted(i.exit_code for i in REASONS.values() if 10 <= i.exit_code <= 29)

    # Execute
    settings = _settings(unit)

    # Assert
    assert (settings["Type"], settings["NotifyAccess"]) == (["notify"], ["main"])
    assert len(settings["WatchdogSec"]) == 1
    assert [int(c) for c in settings["RestartPreventExitStatus"][0].split()] == config_codes
