"""The edge daemon: an update and its residual are kept together or not at all, and a stop
is quick even when the broker is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.demo import Processes, write_configs
from fedstream.edge_node.feedback_store import FeedbackStore, keep_update
from fedstream.edge_node.outbox import Outbox, Pending
from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.protocol.codecs.feedback import ErrorFeedback


def test_keep_update_keeps_the_update_and_its_residual(tmp_path: Path) -> None:
    """A kept update is pending in the outbox and its residual is what a restart loads."""
    # Prepare
    root = tmp_path / "outbox"
    store, outbox = FeedbackStore(root), Outbox(root)
    feedback = ErrorFeedback()
    feedback.residual = [torch.tensor([0.125, 0.0])]

    # Execute
    keep_update(feedback, None, store=store, outbox=outbox, update_id="u1", seq=1,
                frames=[b"f0", b"f1"], trained=("r1", 4))

    # Assert
    assert outbox.pending() == [Pending(update_id="u1", frames=[b"f0", b"f1"])]
    kept = store.load()
    seq, residual = kept.seq, kept.residual
    assert seq == 1 and kept.trained == ("r1", 4)
    assert residual is not None and torch.equal(residual[0], torch.tensor([0.125, 0.0]))


@pytest.mark.parametrize("blocked", [".ef", ".out"], ids=["residual", "outbox"])
def test_keep_update_rolls_the_residual_back_when_a_write_fails(
    tmp_path: Path, blocked: str
) -> None:
    """A failed residual or outbox write raises StoreError and restores the earlier residual."""
    # Prepare
    root = tmp_path / "outbox"
    store, outbox = FeedbackStore(root), Outbox(root)
    (root / f"u1{blocked}").mkdir()  # a directory where the file goes: its write fails
    before = [torch.tensor([0.5, -0.25])]
    feedback = ErrorFeedback()
    feedback.residual = [torch.tensor([0.125, 0.0])]  # what compressing the update left

    # Execute
    with pytest.raises(StoreError) as caught:
        keep_update(feedback, before, store=store, outbox=outbox, update_id="u1", seq=1,
                    frames=[b"f0"], trained=("r1", 4))

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert feedback.residual is before
    assert not (root / "u1.out").is_file()


def _events(log: Path) -> list[str]:
    """The event names of a service's JSON log lines (torch prints a few plain lines too)."""
    return [json.loads(line)["event"] for line in log.read_text().splitlines()
            if line.startswith("{")]


def _wait_logged(log: Path, event: str, proc: subprocess.Popen[bytes],
                 timeout_s: float = 120.0) -> None:
    """Until `event` is in the log; fails at once if the process exits first."""
    give_up = time.monotonic() + timeout_s
    while event not in _events(log):
        try:
            proc.wait(0.1)  # paces the poll and notices an early exit
        except subprocess.TimeoutExpired:
            assert time.monotonic() < give_up, f"no {event} in {timeout_s}s"
        else:
            pytest.fail(f"exited with {proc.returncode} before {event}:\n{log.read_text()}")


@pytest.mark.mosquitto
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_sigterm_with_the_broker_down_exits_in_seconds(
    tmp_path: Path, federation: str, fault: str
) -> None:
    """An edge stopped while its broker is gone or frozen (SIGSTOP) exits 0 in seconds, not
    after a publish timeout; the broker's last will reports it offline."""
    # Prepare
    procs = Processes(tmp_path)
    log = tmp_path / "edge.log"
    broker = Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "broker"))
    try:
        broker.start()
        _, (edge_cfg,) = write_configs(tmp_path, port=broker.port, federation=federation,
                                       edges=1, dirichlet_alpha=1.0)
        procs.spawn("edge", "edge", edge_cfg)
        edge = procs.procs["edge"]
        _wait_logged(log, "edge_started", edge)
        if fault == "stopped":
            broker.stop()
        else:
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)

        # Execute
        edge.send_signal(signal.SIGTERM)
        code = edge.wait(10)
    finally:
        procs.stop()
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        broker.stop()

    # Assert
    assert code == 0
    events = _events(log)
    assert "status_publish_failed" in events
    assert events[-1] == "edge_stopped"
