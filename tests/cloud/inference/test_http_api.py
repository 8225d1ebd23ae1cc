"""The HTTP front door (cloud/inference/http_api.py) over real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from fedstream.cloud.inference import BatcherParams, MicroBatcher, ServedModel
from fedstream.cloud.inference._tally import Tally
from fedstream.cloud.inference.http_api import HttpApi
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.arch import Architecture

Rows = Callable[[int], npt.NDArray[np.float32]]
Reply = tuple[int, dict[str, str], Any]


class _Door:
    """A started batcher + HTTP API pair, torn down by the fixture."""

    def __init__(self, **bounds: int) -> None:
        self.batcher = MicroBatcher(BatcherParams(cols=8, **bounds))
        self.tally = Tally()
        self.api = HttpApi(batcher=self.batcher, tally=self.tally, host="127.0.0.1", port=0)

    def call(self, method: str, path: str, body: bytes | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=10)
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), json.loads(response.read())
        finally:
            conn.close()

    def predict(self, inputs: object) -> Reply:
        return self.call("POST", "/v1/predict", json.dumps({"inputs": inputs}).encode())


@pytest.fixture
def door(started: Callable[[_Door], _Door]) -> Callable[..., _Door]:
    """Starts batcher + HTTP API pairs (port 0), stopped after the test."""
    def make(start_batcher: bool = True, **bounds: int) -> _Door:
        d = started(_Door(**bounds))
        if start_batcher:
            d.batcher.start()
        d.api.start()
        return d

    return make


def test_predict_answers_with_version_classes_and_scores(
    door: Callable[..., _Door], served: Callable[[int], ServedModel], rows: Rows
) -> None:
    """A good request gets 200 with the served version and one class and score per row."""
    # Prepare
    d = door()
    model = served(4)
    d.batcher.swap(model)
    x = rows(3)

    # Execute
    status, _, body = d.predict(x.tolist())

    # Assert
    classes, scores = model.predict(x)
    assert status == 200
    assert body["version"] == 4
    assert body["predictions"] == classes.tolist()
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-5)
    assert d.tally.snapshot()["served.http"] == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "bad_frame"),
        (b"\xff\xfe", "bad_frame"),
        (b"[1, 2]", "bad_frame"),
        (b'{"rows": [[1]]}', "bad_frame"),
        (b'{"inputs": []}', "bad_frame"),
        (b'{"inputs": [1, 2, 3, 4, 5, 6, 7, 8]}', "bad_frame"),
        (b'{"inputs": [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2]]}', "bad_frame"),
        (b'{"inputs": [["1", 2, 3, 4, 5, 6, 7, 8]]}', "bad_frame"),
        (b'{"inputs": [[true, 2, 3, 4, 5, 6, 7, 8]]}', "bad_frame"),
        (b'{"inputs": [[null, 2, 3, 4, 5, 6, 7, 8]]}', "bad_frame"),
        (b'{"inputs": [[NaN, 2, 3, 4, 5, 6, 7, 8]]}', "non_finite"),
        (b'{"inputs": [[Infinity, 2, 3, 4, 5, 6, 7, 8]]}', "non_finite"),
        (b'{"inputs": [[1e39, 2, 3, 4, 5, 6, 7, 8]]}', "non_finite"),
        (b'{"inputs": [[1' + b"0" * 400 + b', 2, 3, 4, 5, 6, 7, 8]]}', "non_finite"),
        (b'{"inputs": [[1, 2, 3]]}', "spec_mismatch"),
        (json.dumps({"inputs": [[0.5] * 8] * 5}).encode(), "bad_frame"),
        (b'{"inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "bad_frame"),
    ],
    ids=["not-json", "not-utf8", "not-an-object", "no-inputs", "no-rows", "flat-list",
         "ragged", "string", "bool", "null", "nan", "infinity", "float32-overflow",
         "huge-int", "wrong-width", "over-max-rows", "nested-too-deep"],
)
def test_bad_requests_are_400_and_the_server_keeps_serving(
    door: Callable[..., _Door], served: Callable[[int], ServedModel], rows: Rows,
    body: bytes, reason: str,
) -> None:
    """Malformed bodies get 400 with the reason code; the next good request is still answered."""
    # Prepare
    d = door(max_rows=4)
    d.batcher.swap(served(1))

    # Execute
    status, _, refused = d.call("POST", "/v1/predict", body)
    after, _, answered = d.predict(rows(1).tolist())

    # Assert
    assert (status, refused["ok"], refused["reason"]) == (400, False, reason)
    assert refused["detail"]
    assert (after, answered["version"]) == (200, 1)
    assert d.tally.snapshot()[f"reason.{reason}"] == 1


def test_oversized_body_is_413(door: Callable[..., _Door], served: Callable[[int], ServedModel]
                               ) -> None:
    """A body larger than the largest allowed request is refused before it is parsed."""
    # Prepare
    d = door()
    d.batcher.swap(served(1))

    # Execute
    status, _, body = d.call("POST", "/v1/predict", b" " * (2 << 20))

    # Assert
    assert (status, body["reason"]) == (413, "oversized")


def test_no_model_yet_is_503(door: Callable[..., _Door], rows: Rows) -> None:
    """Before the first swap both predict and the model view answer 503 no_model."""
    # Prepare
    d = door()

    # Execute
    predict = d.predict(rows(1).tolist())
    model = d.call("GET", "/v1/model")

    # Assert
    for status, headers, body in (predict, model):
        assert (status, body["reason"]) == (503, "no_model")
        assert headers["Retry-After"] == "1"


def test_full_queue_is_503_overloaded(
    door: Callable[..., _Door], served: Callable[[int], ServedModel], rows: Rows
) -> None:
    """With max_queue rows already waiting, a request is refused at once with 503."""
    # Prepare
    d = door(start_batcher=False, max_rows=2, max_queue=2)
    d.batcher.swap(served(1))
    waiting = d.batcher.submit(rows(2))

    # Execute
    status, _, body = d.predict(rows(1).tolist())

    # Assert
    assert (status, body["reason"]) == (503, "overloaded")
    d.batcher.stop()
    assert waiting.exception(timeout=1) is not None


def test_model_view_and_health(door: Callable[..., _Door],
                               served: Callable[[int], ServedModel]) -> None:
    """GET /v1/model names the served version, precision and backend; /healthz says ok."""
    # Prepare
    d = door()
    model = served(6)
    d.batcher.swap(model)

    # Execute
    _, _, view = d.call("GET", "/v1/model")
    health = d.call("GET", "/healthz")

    # Assert
    assert view == {"version": 6, "precision": "fp32", "backend": model.backend.name}
    assert (health[0], health[2]) == (200, {"ok": True})


def test_port_zero_binds_a_free_port_and_logs_it() -> None:
    """Port 0 picks a free port, exposed as `port` and logged as http_started."""
    # Prepare
    api = HttpApi(batcher=MicroBatcher(BatcherParams(cols=8)), tally=Tally(),
                  host="127.0.0.1", port=0)

    # Execute
    with capture_logs() as logs:
        api.start()
    api.stop()

    # Assert
    assert api.port > 0
    started = [e for e in logs if e["event"] == "http_started"]
    assert started == [{"event": "http_started", "log_level": "info", "host": "127.0.0.1",
                        "port": api.port}]


def test_port_in_use_is_a_config_error(door: Callable[..., _Door]) -> None:
    """Binding a port another server holds fails start with bad_config, not a hang."""
    # Prepare
    taken = door().api.port
    api = HttpApi(batcher=MicroBatcher(BatcherParams(cols=8)), tally=Tally(),
                  host="127.0.0.1", port=taken)

    # Execute
    with pytest.raises(ConfigError) as info:
        api.start()

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert str(taken) in info.value.detail


def test_failed_forward_pass_is_500_and_serving_goes_on(
    door: Callable[..., _Door], served: Callable[[int], ServedModel],
    preparer_for: Callable[[Architecture], ServedModel], rows: Rows,
) -> None:
    """A model that cannot take the rows answers 500 internal; the next version serves again."""
    # Prepare
    d = door()
    d.batcher.swap(preparer_for(Architecture.mlp((5, 4))))  # takes 5 features, requests carry 8

    # Execute
    status, _, body = d.predict(rows(1).tolist())
    d.batcher.swap(served(2))
    after, _, answered = d.predict(rows(1).tolist())

    # Assert
    assert (status, body["ok"], body["reason"]) == (500, False, "internal")
    assert "mat1" not in body["detail"] and "service log" in body["detail"]  # no torch internals
    assert (after, answered["version"]) == (200, 2)
    d.api.stop()
    d.api.stop()  # a second stop is harmless


def test_stop_after_a_start_that_timed_out_returns(door: Callable[..., _Door]) -> None:
    """A start that gives up before the socket listens (timeout 0) leaves a thread that binds
    late: stop() must still end it, not wait forever."""
    # Prepare
    api = HttpApi(batcher=MicroBatcher(BatcherParams(cols=8)), tally=Tally(),
                  host="127.0.0.1", port=0)
    with contextlib.suppress(ConfigError):
        api.start(timeout_s=0)

    # Execute
    stopper = threading.Thread(target=api.stop)
    stopper.start()
    stopper.join(10)

    # Assert
    assert not stopper.is_alive()
