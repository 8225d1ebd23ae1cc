"""`fedstream install`: the systemd units and configs of this venv's fedstream, put in place.

The wheel ships the units and example configs under the venv's `share/fedstream/`
(`deploy/` in a checkout). Installing writes each role's unit to `/etc/systemd/system/`, with
`ExecStart=` naming the `fedstream` of the venv that runs the install, and its config to
`/etc/fedstream/<role>.toml` unless one is there (an operator's edits are never overwritten),
then enables the unit. `root` stands for `/`: a scratch directory (tests) or an image being
built, in which case the venv must live inside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fedstream.shared.errors import ConfigError, Reason, StoreError

# The venv path the shipped units name; `render_unit` puts the real one in its place.
SHIPPED_VENV = "/opt/fedstream/venv"
# A checkout's root, where an editable install finds deploy/.
CHECKOUT = Path(__file__).resolve().parents[1]
# The venv running this install, whose fedstream the units start.
PREFIX = Path(sys.prefix)
UNIT_DIR = Path("etc/systemd/system")
CONFIG_DIR = Path("etc/fedstream")


@dataclass(frozen=True, slots=True)
class Role:
    """One installable service."""

    unit: str
    example: str

    @property
    def config(self) -> str:
        """The config's file name in /etc/fedstream, the one the unit's ExecStart reads."""
        return f"{self.unit.removeprefix('fedstream-').removesuffix('.service')}.toml"


ROLES = {
    "cloud": Role(unit="fedstream-cloud.service", example="cloud.example.toml"),
    "edge": Role(unit="fedstream-edge.service", example="edge.example.toml"),
}


class Outcome(StrEnum):
    """What happened to one file."""

    WROTE = "wrote"
    KEPT = "kept"


@dataclass(frozen=True, slots=True)
class Placed:
    """One file of the install and what happened to it."""

    path: Path
    outcome: Outcome


def assets_dir(prefix: Path, checkout: Path) -> Path:
    """Where the units and example configs are: the venv's `share/fedstream` (a wheel's
    install), else a checkout's `deploy/` (an editable install).

    Raises:
        ConfigError: BAD_DATA when neither holds them (a broken install).
    """
    for candidate in (prefix / "share" / "fedstream", checkout / "deploy"):
        if (candidate / "systemd").is_dir() and (candidate / "config").is_dir():
            return candidate
    raise ConfigError(Reason.BAD_DATA, f"no units or example configs under {prefix}/share/"
                      f"fedstream or {checkout}/deploy: reinstall the fedstream wheel")


def unit_venv(prefix: Path, root: Path) -> str:
    """The venv's path as the units must name it: relative to `root`, which stands for `/`.

    Raises:
        ConfigError: BAD_CONFIG when the venv is not inside `root` (its units would start a
            program that is not there).
    """
    try:
        inside = prefix.resolve().relative_to(root.resolve())
    except ValueError:
        raise ConfigError(Reason.BAD_CONFIG, f"this fedstream runs from {prefix}, outside "
                          f"--root {root}: run the install with the fedstream of a venv "
                          f"inside {root}") from None
    return "/" + inside.as_posix()


def render_unit(text: str, venv: str) -> str:
    """A shipped unit with `venv` in place of the venv path it names (pure)."""
    return text.replace(SHIPPED_VENV, venv.rstrip("/") or "/")


def install(roles: list[str], *, root: Path, prefix: Path = PREFIX,
            checkout: Path = CHECKOUT) -> list[Placed]:
    """Write the units and configs of `roles` under `root`.

    Raises:
        ConfigError: UNKNOWN_NAME for a role that does not exist; see `assets_dir` and
            `unit_venv`.
        StoreError: STORE_FAILED when a file cannot be written (not root, read-only).
    """
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ConfigError(Reason.UNKNOWN_NAME, f"no role {', '.join(unknown)}; the roles are "
                          f"{', '.join(ROLES)}")
    assets = assets_dir(prefix, checkout)
    venv = unit_venv(prefix, root)
    placed = []
    for name in dict.fromkeys(roles):
        role = ROLES[name]
        unit = render_unit((assets / "systemd" / role.unit).read_text(), venv)
        placed.append(_write(root / UNIT_DIR / role.unit, unit, keep=False))
        example = (assets / "config" / role.example).read_text()
        placed.append(_write(root / CONFIG_DIR / role.config, example, keep=True))
    return placed


def _write(path: Path, text: str, *, keep: bool) -> Placed:
    """`path` holds `text` when this returns, written whole; with `keep`, a file already
    there stays as it is. Mode 0644: the services run as a DynamicUser that must read it."""
    if keep and path.exists():
        return Placed(path, Outcome.KEPT)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StoreError(Reason.STORE_FAILED, f"cannot write {path}: {err.strerror}; run as "
                         "root (sudo) or pass --root DIR") from err
    return Placed(path, Outcome.WROTE)


def enable(roles: list[str], *, root: Path) -> None:
    """`systemctl enable` each role's unit (`--root` unless `root` is `/`), after a
    `daemon-reload` when systemd runs this machine, so it reads the new units.

    Raises:
        StoreError: STORE_FAILED when systemctl is missing or refuses.
    """
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise StoreError(Reason.STORE_FAILED, "systemctl not found: enable the units by hand, "
                         "or pass --no-enable")
    units = [ROLES[name].unit for name in dict.fromkeys(roles)]
    live = root.resolve() == Path("/") and Path("/run/systemd/system").is_dir()
    commands = [[systemctl, "daemon-reload"]] if live else []
    where = [] if root.resolve() == Path("/") else [f"--root={root}"]
    commands.append([systemctl, *where, "enable", *units])
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StoreError(Reason.STORE_FAILED, f"{' '.join(argv)} failed: "
                             f"{(done.stderr or done.stdout).strip()}")
