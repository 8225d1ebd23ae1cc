"""Tests for shared/protocol/commands.py: one message per verb, and v1 `cmd` frames upgraded to
them."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import (
    ANSWERS,
    COMMANDS,
    Command,
    ModelList,
    ModelPromote,
    ModelRollback,
    RoundStart,
    RoundStop,
    StatusQuery,
    upgrade_cmd_v1,
)
from fedstream.shared.protocol.control import RoundMode
from fedstream.shared.protocol.history import DEFAULT_ROUNDS, MAX_ROUNDS, RoundList
from fedstream.shared.protocol.topics import Topics


def _v1(verb: str, **args: object) -> bytes:
    """A frame as a v1 CLI sent it: kind `cmd`, the verb and a map of scalar arguments."""
    return msgpack.packb({"v": 1, "k": "cmd", "verb": verb, "args": args}, use_bin_type=True)


@pytest.mark.parametrize(("frame", "expected"), [
    (_v1("round_stop"), RoundStop()),
    (_v1("status"), StatusQuery()),
    (_v1("model_list"), ModelList()),
    (_v1("model_rollback", version=2), ModelRollback(version=2)),
    (_v1("model_promote", version=5), ModelPromote(version=5)),
    (_v1("round_start"), RoundStart()),
    (_v1("round_start", epochs=2, lr=0.1, momentum=0.5, batch_size=16, deadline_s=30,
         codec="topk", **{"codec.density": 0.05}, fraction=0.5, edges="e1,e2"),
     RoundStart(epochs=2, lr=0.1, momentum=0.5, batch_size=16, deadline_s=30.0, codec="topk",
                codec_params={"density": 0.05}, fraction=0.5, edges=("e1", "e2"))),
    (_v1("round_start", mode="async", buffer=3, max_staleness=1, unread=True),
     RoundStart(mode=RoundMode.ASYNC, buffer=3, max_staleness=1)),
    (_v1("round_start", epochs="3", edges=""), RoundStart(epochs=3, edges=())),
], ids=["round_stop", "status", "model_list", "rollback", "promote", "round_start-bare",
        "round_start-sync", "round_start-async", "round_start-cast"])
def test_v1_cmd_frame_is_upgraded_to_its_typed_command(frame: bytes, expected: Command) -> None:
    """A v1 `{verb, args}` frame reads as the command of its verb, its arguments converted as
    the v1 cloud did (int/float casts, `codec.<name>`, comma-separated edges, unread keys
    ignored)."""
    # Execute
    msg = wire.unpack(frame)

    # Assert
    assert msg == expected
    assert type(msg) is type(expected)


@pytest.mark.parametrize(("frame", "reason"), [
    (_v1("launch"), Reason.UNKNOWN_KIND),
    (_v1("model_rollback"), Reason.BAD_FRAME),
    (_v1("model_promote", version=True), Reason.BAD_FRAME),
    (_v1("model_rollback", version="2"), Reason.BAD_FRAME),
    (_v1("round_start", epochs="two"), Reason.BAD_FRAME),
    (_v1("round_start", mode="eventually"), Reason.BAD_FRAME),
    (msgpack.packb({"v": 1, "k": "cmd", "args": {}}), Reason.BAD_FRAME),
    (msgpack.packb({"v": 1, "k": "cmd", "verb": "status", "args": {"n": None}}),
     Reason.BAD_FRAME),
    (msgpack.packb({"v": 2, "k": "cmd", "verb": "status", "args": {}}),
     Reason.UNSUPPORTED_VERSION),
], ids=["unknown-verb", "no-version", "bool-version", "str-version", "bad-epochs",
        "unknown-mode", "no-verb", "non-scalar-arg", "newer-cmd"])
def test_bad_v1_cmd_frame_is_a_protocol_error(frame: bytes, reason: Reason) -> None:
    """A v1 frame that does not upgrade is refused with a reason, never another exception."""
    # Execute
    with pytest.raises(ProtocolError) as info:
        wire.unpack(frame)

    # Assert
    assert info.value.reason is reason


def test_upgrade_is_the_one_reader_of_the_retired_kind() -> None:
    """`cmd` is no longer a kind anything packs, and its reader is `upgrade_cmd_v1`."""
    # Prepare / Execute
    newest, upgrade = wire.RETIRED["cmd"]

    # Assert
    assert "cmd" not in wire.KINDS
    assert (newest, upgrade) == (1, upgrade_cmd_v1)


def test_every_command_has_its_own_kind_and_verb_topic() -> None:
    """Each command's kind is registered and unique, and its verb is a valid topic segment."""
    # Prepare
    topics = Topics("lab")

    # Execute
    kinds = [cls.KIND for cls in COMMANDS]
    paths = [str(topics.command(cls.VERB)) for cls in COMMANDS]

    # Assert
    assert len(set(kinds)) == len(COMMANDS)
    assert all(wire.KINDS[cls.KIND] is cls for cls in (*COMMANDS, *ANSWERS))
    assert paths == [f"fedstream/v1/lab/cmd/{v}" for v in (
        "round_start", "round_stop", "status", "model_list", "model_rollback",
        "model_promote", "edge_enrol", "edge_revoke", "round_list")]


def test_round_start_sends_only_what_the_operator_gave() -> None:
    """Fields left to the cloud's default are not on the wire, and read back as None."""
    # Prepare
    msg = RoundStart(epochs=1, mode=RoundMode.ASYNC)

    # Execute
    raw: dict[str, Any] = msgpack.unpackb(wire.pack(msg), raw=False)
    back = wire.unpack(wire.pack(msg))

    # Assert
    assert raw == {"v": 1, "k": "round_start", "ep": 1, "mode": "async"}
    assert back == msg
    assert RoundStart().to_wire() == {}
    assert msg.given() == {"epochs": 1, "mode": RoundMode.ASYNC}


def test_nil_round_start_fields_read_as_the_clouds_default() -> None:
    """A nil field (another writer's way of saying "default") reads as None, like a missing one."""
    # Prepare
    buf = msgpack.packb({"v": 1, "k": "round_start", "ep": None, "codec": "int8"})

    # Execute
    back = wire.unpack(buf)

    # Assert
    assert back == RoundStart(codec="int8")


def test_round_list_without_a_limit_asks_for_the_default_and_checks_its_range() -> None:
    """A `round_list` frame without `n` asks for the default number of rounds; a limit out of
    range cannot be built."""
    # Prepare
    buf = msgpack.packb({"v": 1, "k": "round_list"})

    # Execute
    back = wire.unpack(buf)

    # Assert
    assert back == RoundList(limit=DEFAULT_ROUNDS)
    with pytest.raises(ValueError, match="limit"):
        RoundList(limit=MAX_ROUNDS + 1)
