"""`fedstream token create|revoke|list` (fedstream/tokens_cli.py) in real subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedstream.cloud.inference.tokens import TokenStore
from fedstream.shared.errors import REASONS, Reason, SecurityError


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedstream", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A cloud config whose data_dir is this test's `data/`."""
    path = tmp_path / "cloud.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


def test_create_prints_the_secret_once_and_list_never_shows_it(config: Path,
                                                               tmp_path: Path) -> None:
    """`create` prints only the secret on stdout and says on stderr it is not stored; the
    secret checks in the service's store; `list` shows the name as live, without it."""
    # Execute
    created = _run("token", "create", "ci-bot", "--config", str(config))
    listed = _run("token", "list", "--config", str(config))

    # Assert
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("fst_") and "\n" not in secret
    assert "only its hash is stored" in created.stderr
    with TokenStore.open(tmp_path / "data") as store:
        assert store.check(secret) == "ci-bot"
    assert listed.returncode == 0, listed.stderr
    name, created_at, state = listed.stdout.strip().split("\t")
    assert (name, state) == ("ci-bot", "live") and created_at.startswith("created 20")
    assert secret not in listed.stdout + listed.stderr


def test_a_revoke_by_the_cli_holds_in_a_running_store_and_again_is_a_no_op(
    config: Path, tmp_path: Path
) -> None:
    """A store kept open (the service) refuses a token from the check after another process
    revoked it; a second revoke exits 0 saying it already was."""
    # Prepare
    with TokenStore.open(tmp_path / "data") as service:
        secret = service.create("ci-bot")
        assert service.check(secret) == "ci-bot"

        # Execute
        first = _run("token", "revoke", "ci-bot", "--config", str(config))
        with pytest.raises(SecurityError) as info:
            service.check(secret)
        second = _run("token", "revoke", "ci-bot", "--config", str(config))

    # Assert
    assert info.value.reason is Reason.UNAUTHORISED
    assert (first.returncode, second.returncode) == (0, 0)
    assert "revoked" in first.stdout and "already revoked" in second.stdout


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("revoke", "nobody"), Reason.UNKNOWN_NAME),
        (("create", "two words"), Reason.BAD_CONFIG),
    ],
    ids=["revoke-unknown", "bad-name"],
)
def test_refusals_exit_with_their_reason(config: Path, args: tuple[str, ...],
                                         reason: Reason) -> None:
    """Revoking a name no token had, or creating one that is not a plain word, exits with
    that reason's code and names it, without a traceback."""
    # Execute
    done = _run("token", *args, "--config", str(config))

    # Assert
    assert done.returncode == REASONS[reason].exit_code
    assert str(reason) in done.stderr and "Traceback" not in done.stderr


def test_creating_a_live_name_again_is_bad_config(config: Path, tmp_path: Path) -> None:
    """A second `create` of a live token's name exits bad_config telling to revoke first."""
    # Prepare
    with TokenStore.open(tmp_path / "data") as store:
        store.create("ci-bot")

    # Execute
    done = _run("token", "create", "ci-bot", "--config", str(config))

    # Assert
    assert done.returncode == REASONS[Reason.BAD_CONFIG].exit_code
    assert "revoke it first" in done.stderr and done.stdout == ""


def test_a_missing_config_is_config_not_found(tmp_path: Path) -> None:
    """`token list` with a config path that does not exist exits config_not_found."""
    # Execute
    done = _run("token", "list", "--config", str(tmp_path / "nope.toml"))

    # Assert
    assert done.returncode == REASONS[Reason.CONFIG_NOT_FOUND].exit_code
