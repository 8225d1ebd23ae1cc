"""Tests for fedstream/documents.py: the `--json` twin of each table, through
`console.print_json`."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from fedstream import documents
from fedstream.console import print_json
from fedstream.shared.protocol.commands import StatusReply

if TYPE_CHECKING:
    from conftest import Replies  # this folder's: the fixed replies


def _printed(doc: dict[str, Any]) -> Any:
    """`doc` as printed, parsed back."""
    out = io.StringIO()
    print_json(doc, out)
    assert "\x1b" not in out.getvalue()
    return json.loads(out.getvalue())


def test_status_document_has_stable_keys(replies: Replies) -> None:
    """`status --json`: the model, the round, edge counts, rejections, intake and serving."""
    # Execute
    doc = _printed(documents.status_doc(replies.status))

    # Assert
    assert list(doc) == ["model", "round", "edges", "rejections", "intake_bytes", "serving"]
    assert doc["model"] == {"version": 2, "metrics": {"accuracy": 0.9415}}
    assert doc["edges"] == {"online": 2, "total": 3}
    assert doc["rejections"] == {"bad_hash": 2}
    assert doc["round"]["id"] == "r3" and doc["round"]["status"] == "collecting"
    assert doc["serving"]["http_port"] == 8080


def test_round_document_keeps_the_result_and_nulls_what_is_absent(replies: Replies) -> None:
    """A round is its id, mode, status, versions, counts, times, result and reason; an empty
    reason is null."""
    # Execute
    doc = _printed(documents.rounds_doc((replies.failed, replies.published)))

    # Assert
    failed, published = doc["rounds"]
    assert list(failed) == ["id", "mode", "status", "base_version", "codec", "selection",
                            "declined", "expected", "received", "quorum", "opened",
                            "deadline", "result", "reason"]
    assert (failed["status"], failed["reason"], failed["expected"], failed["received"]) == (
        "failed", "no_quorum", 2, 1)
    assert failed["declined"] == {"edge-2": "too_little_data"}
    assert failed["result"] == {"detail": "1 of 2 updates"}
    assert published["reason"] is None and published["result"]["version"] == 2
    assert published["opened"] == 100.0 and published["deadline"] == 160.0


def test_edges_document_lists_edges_by_id_with_declines(replies: Replies) -> None:
    """`edges --json`: one object per edge, by id; no backend or data yet is null."""
    # Execute
    doc = _printed(documents.edges_doc(replies.edges))

    # Assert
    assert [e["id"] for e in doc["edges"]] == ["edge-0", "edge-1", "edge-2"]
    assert list(doc["edges"][0]) == ["id", "online", "version", "samples", "backend", "data",
                                     "last_round", "declined"]
    offline = doc["edges"][2]
    assert (offline["online"], offline["backend"], offline["data"]) == (False, None, None)
    assert offline["declined"] == {"round": "r2", "reason": "too_little_data"}
    assert doc["edges"][0]["backend"] == {"backend": "ipex", "precision": "bf16"}


def test_models_document_marks_the_served_version(replies: Replies) -> None:
    """`model list --json`: each version with status, reason, origin and its metrics by
    name."""
    # Execute
    doc = _printed(documents.models_doc(replies.models))

    # Assert
    assert doc["serving"] == 3
    assert [(v["version"], v["served"]) for v in doc["versions"]] == [
        (0, False), (1, False), (2, False), (3, True)]
    rejected = doc["versions"][2]
    assert (rejected["status"], rejected["reason"]) == ("rejected", "regressed_past")
    assert doc["versions"][1]["metrics"] == {"accuracy": 0.9, "forgetting": 0.0}
    assert doc["versions"][3]["origin"] == "rollback of v1"
    assert doc["versions"][0]["parent"] is None and doc["versions"][0]["round"] is None


def test_a_nan_score_is_null(replies: Replies) -> None:
    """A NaN metric (an untrained model's) prints as null: the document stays strict JSON."""
    # Prepare
    reply = StatusReply(round=replies.open, edges=(), model_version=0,
                        model_metrics={"accuracy": float("nan")})

    # Execute
    doc = _printed(documents.status_doc(reply))

    # Assert
    assert doc["model"]["metrics"] == {"accuracy": None}
