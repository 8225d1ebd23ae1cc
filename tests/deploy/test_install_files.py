"""`fedstream install`: which files it writes where, what it keeps, and how it refuses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedstream.install import Outcome, assets_dir, enable, install, render_unit, unit_venv
from fedstream.shared.errors import ConfigError, Reason, StoreError

REPO = Path(__file__).resolve().parents[2]
SYSTEMCTL = shutil.which("systemctl")


def _venv(root: Path, relative: str = "srv/fs/venv") -> Path:
    """A venv-like prefix inside `root` whose share/fedstream holds the shipped assets, as a
    wheel's install lays them out."""
    prefix = root / relative
    share = prefix / "share" / "fedstream"
    share.mkdir(parents=True)
    shutil.copytree(REPO / "deploy" / "systemd", share / "systemd")
    shutil.copytree(REPO / "deploy" / "config", share / "config")
    return prefix


def test_units_name_the_venv_that_installs_them(tmp_path: Path) -> None:
    """Both units land in etc/systemd/system, running the venv's fedstream by its path
    inside the root; nothing else in them changes."""
    # Prepare
    prefix = _venv(tmp_path)

    # Execute
    placed = install(["cloud", "edge"], root=tmp_path, prefix=prefix)

    # Assert
    unit = tmp_path / "etc/systemd/system/fedstream-edge.service"
    assert [p.path.relative_to(tmp_path).as_posix() for p in placed] == [
        "etc/systemd/system/fedstream-cloud.service", "etc/fedstream/cloud.toml",
        "etc/systemd/system/fedstream-edge.service", "etc/fedstream/edge.toml"]
    assert {p.outcome for p in placed} == {Outcome.WROTE}
    assert "ExecStart=/srv/fs/venv/bin/fedstream edge run --config /etc/fedstream/edge.toml" \
        in unit.read_text().splitlines()
    shipped = (REPO / "deploy/systemd/fedstream-edge.service").read_text()
    assert unit.read_text() == shipped.replace("/opt/fedstream/venv", "/srv/fs/venv")
    assert unit.stat().st_mode & 0o777 == 0o644


def test_configs_start_as_the_examples(tmp_path: Path) -> None:
    """Each role's config is its example, readable by the service's dynamic user."""
    # Execute
    install(["edge"], root=tmp_path, prefix=_venv(tmp_path))

    # Assert
    config = tmp_path / "etc/fedstream/edge.toml"
    assert config.read_text() == (REPO / "deploy/config/edge.example.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "etc/fedstream/cloud.toml").exists()


def test_a_second_install_keeps_an_edited_config_and_refreshes_the_unit(tmp_path: Path) -> None:
    """An upgrade's install rewrites the unit but never an operator's config."""
    # Prepare
    prefix = _venv(tmp_path)
    install(["edge"], root=tmp_path, prefix=prefix)
    config = tmp_path / "etc/fedstream/edge.toml"
    config.write_text('edge_id = "gw-7"\n')
    unit = tmp_path / "etc/systemd/system/fedstream-edge.service"
    unit.write_text("stale\n")

    # Execute
    placed = install(["edge"], root=tmp_path, prefix=prefix)

    # Assert
    assert [(p.path, p.outcome) for p in placed] == [(unit, Outcome.WROTE),
                                                      (config, Outcome.KEPT)]
    assert config.read_text() == 'edge_id = "gw-7"\n'
    assert unit.read_text().startswith("# The fedstream edge daemon")


def test_an_editable_install_reads_the_checkouts_deploy(tmp_path: Path) -> None:
    """A venv without share/fedstream (an editable install) uses the checkout's deploy/."""
    # Prepare
    prefix = tmp_path / "venv"
    prefix.mkdir()

    # Execute
    found = assets_dir(prefix, REPO)

    # Assert
    assert found == REPO / "deploy"


def test_no_assets_anywhere_is_bad_data(tmp_path: Path) -> None:
    """A venv and checkout without units is a broken install, said as such."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        assets_dir(tmp_path / "venv", tmp_path)

    # Assert
    assert caught.value.reason is Reason.BAD_DATA
    assert "reinstall the fedstream wheel" in caught.value.detail


def test_a_venv_outside_the_root_is_refused(tmp_path: Path) -> None:
    """Units naming a venv the root does not hold would start nothing: refused first."""
    # Prepare
    prefix = _venv(tmp_path / "elsewhere")
    root = tmp_path / "image"

    # Execute
    with pytest.raises(ConfigError) as caught:
        install(["edge"], root=root, prefix=prefix)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert not root.exists()


def test_an_unknown_role_names_the_roles(tmp_path: Path) -> None:
    """A role that does not exist is unknown_name, listing the ones that do."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        install(["edge", "broker"], root=tmp_path, prefix=_venv(tmp_path))

    # Assert
    assert caught.value.reason is Reason.UNKNOWN_NAME
    assert caught.value.detail == "no role broker; the roles are cloud, edge"
    assert not (tmp_path / "etc").exists()


def test_an_unwritable_destination_is_store_failed_naming_it(tmp_path: Path) -> None:
    """A destination that cannot be made (here etc/ is a file) stops with the path and what
    to do; no temporary file is left."""
    # Prepare
    prefix = _venv(tmp_path)
    (tmp_path / "etc").write_text("not a directory\n")

    # Execute
    with pytest.raises(StoreError) as caught:
        install(["edge"], root=tmp_path, prefix=prefix)

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert caught.value.detail.startswith(
        f"cannot write {tmp_path}/etc/systemd/system/fedstream-edge.service")
    assert "run as root (sudo) or pass --root DIR" in caught.value.detail


def test_render_unit_and_unit_venv_map_the_root_to_slash(tmp_path: Path) -> None:
    """Inside a root, the venv is named from the root; the unit text follows it."""
    # Execute
    venv = unit_venv(tmp_path / "opt/x/venv", tmp_path)

    # Assert
    assert venv == "/opt/x/venv"
    assert render_unit("ExecStart=/opt/fedstream/venv/bin/fedstream", venv) == \
        "ExecStart=/opt/x/venv/bin/fedstream"


needs_systemctl = pytest.mark.skipif(SYSTEMCTL is None, reason="systemctl is not installed")


@needs_systemctl
def test_enable_links_both_units_into_multi_user(tmp_path: Path) -> None:
    """`systemctl --root` enables both units: started at boot by multi-user.target."""
    # Prepare
    install(["cloud", "edge"], root=tmp_path, prefix=_venv(tmp_path))

    # Execute
    enable(["cloud", "edge"], root=tmp_path)

    # Assert
    for unit in ("fedstream-cloud.service", "fedstream-edge.service"):
        state = subprocess.run([str(SYSTEMCTL), f"--root={tmp_path}", "is-enabled", unit],
                               capture_output=True, text=True, check=False)
        assert state.stdout.strip() == "enabled"
        link = tmp_path / "etc/systemd/system/multi-user.target.wants" / unit
        assert link.readlink() == Path("/etc/systemd/system") / unit


@needs_systemctl
def test_enabling_a_unit_that_is_not_there_is_store_failed(tmp_path: Path) -> None:
    """systemctl's refusal is passed on with its own words."""
    # Execute
    with pytest.raises(StoreError) as caught:
        enable(["edge"], root=tmp_path)

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert "enable fedstream-edge.service failed" in caught.value.detail


def test_the_cli_exits_with_the_refusals_code(tmp_path: Path) -> None:
    """This venv is not inside `--root`: the CLI says why and exits bad_config (10), which
    a script can tell from a write failure (84); nothing is written."""
    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "fedstream", "install", "edge", "--root", str(tmp_path),
         "--no-enable"], capture_output=True, text=True, check=False, timeout=60)

    # Assert
    assert done.returncode == 10, done.stderr
    assert f"outside --root {tmp_path}" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_an_unknown_role_before_anything(tmp_path: Path) -> None:
    """argparse names the roles (exit 2)."""
    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "fedstream", "install", "broker", "--root", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=60)

    # Assert
    assert done.returncode == 2
    assert "invalid choice: 'broker' (choose from 'cloud', 'edge')" in done.stderr
