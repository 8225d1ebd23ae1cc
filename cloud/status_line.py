"""The cloud service's one-line status for `systemctl status` (sd_notify `STATUS=`): pure
text from the coordinator's state."""

from __future__ import annotations

from fedstream.shared.protocol.control import RoundState, RoundStatus


def cloud_status_line(*, connected: bool, state: RoundState | None, version: int,
                      edges_online: int) -> str:
    """What the cloud is doing, e.g. "round r-ab12 collecting 3/5 updates, model v7, 2 edges
    online".

    Args:
        connected: The broker holds the session now (False while paho reconnects).
        state: The latest round, None before the first.
        version: The served model version.
        edges_online: Edges whose last status says online.
    """
    edges = f"{edges_online} edge{'' if edges_online == 1 else 's'} online"
    line = f"{_round(state)}, model v{version}, {edges}"
    return line if connected else f"broker unreachable, retrying; {line}"


def _round(state: RoundState | None) -> str:
    if state is None:
        return "no round yet"
    if state.status is RoundStatus.FAILED:
        return f"round {state.round_id} failed ({state.reason or 'no reason given'})"
    if state.terminal:
        return f"round {state.round_id} {state.status}"
    if state.is_async:
        return (f"session {state.round_id} {state.status}, {state.received} updates "
                f"(buffer {state.buffer})")
    return f"round {state.round_id} {state.status} {state.received}/{state.expected} updates"
