"""The micro-batcher (cloud/inference/batcher.py): merged forward passes, bounds and errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import numpy as np
import numpy.typing as npt
import pytest

from fedstream.cloud.inference import Answer, BatcherParams, MicroBatcher, ServedModel
from fedstream.shared.errors import FedstreamError, ProtocolError, Reason
from fedstream.shared.protocol.arch import Architecture

Rows = Callable[[int], npt.NDArray[np.float32]]
Served = Callable[[int], ServedModel]


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., MicroBatcher]]:
    """Builds batchers for 8-feature rows and stops every one after the test."""
    made: list[MicroBatcher] = []

    def make(**bounds: float) -> MicroBatcher:
        batcher = MicroBatcher(BatcherParams(cols=8, **bounds))  # type: ignore[arg-type]
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.stop()


def _answers(futures: list[Future[Answer]]) -> list[Answer]:
    return [f.result(timeout=10) for f in futures]


def test_concurrent_requests_share_one_forward_pass(
    make_batcher: Callable[..., MicroBatcher], served: Served, rows: Rows
) -> None:
    """Eight threads submitting at once are answered by a single pass once the batch is full."""
    # Prepare
    batcher = make_batcher(max_batch=8, max_wait_ms=10_000)
    batcher.swap(served(1))
    batcher.start()
    inputs = [rows(1) for _ in range(8)]
    futures: list[Future[Answer]] = []
    together = threading.Barrier(8)

    def client(x: npt.NDArray[np.float32]) -> None:
        together.wait()
        futures.append(batcher.submit(x))

    threads = [threading.Thread(target=client, args=(x,)) for x in inputs]

    # Execute
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = _answers(futures)

    # Assert: a full batch does not wait out its 10 s, and one pass answered all eight
    assert batcher.passes == 1
    assert [a.version for a in answers] == [1] * 8
    assert all(len(a.predictions) == len(a.scores) == 1 for a in answers)


def test_batched_answers_equal_unbatched_forward_passes(
    make_batcher: Callable[..., MicroBatcher], served: Served, rows: Rows
) -> None:
    """Each request gets exactly the classes and scores of its own rows run alone."""
    # Prepare
    model = served(2)
    batcher = make_batcher(max_batch=64)
    batcher.swap(model)
    inputs = [rows(n) for n in (1, 3, 2, 5)]
    futures = [batcher.submit(x) for x in inputs]  # queued before the worker starts

    # Execute
    batcher.start()
    answers = _answers(futures)

    # Assert
    assert batcher.passes == 1
    for x, answer in zip(inputs, answers, strict=True):
        classes, scores = model.predict(x)
        assert answer.version == 2
        assert answer.predictions.tolist() == classes.tolist()
        np.testing.assert_allclose(answer.scores, scores, rtol=1e-5)


def test_batches_never_exceed_max_batch_rows(
    make_batcher: Callable[..., MicroBatcher], served: Served, rows: Rows
) -> None:
    """Five queued requests of 3 rows with max_batch 6 take three passes (2 + 2 + 1)."""
    # Prepare
    batcher = make_batcher(max_batch=6)
    batcher.swap(served(1))
    futures = [batcher.submit(rows(3)) for _ in range(5)]

    # Execute
    batcher.start()
    answers = _answers(futures)

    # Assert
    assert batcher.passes == 3
    assert [len(a.predictions) for a in answers] == [3] * 5


def test_queue_beyond_max_queue_rows_is_overloaded(
    make_batcher: Callable[..., MicroBatcher], served: Served, rows: Rows
) -> None:
    """Once max_queue rows wait, the next request is refused; stopping fails the waiting ones."""
    # Prepare
    batcher = make_batcher(max_rows=4, max_queue=6)
    batcher.swap(served(1))
    waiting = [batcher.submit(rows(4)), batcher.submit(rows(2))]

    # Execute
    with pytest.raises(FedstreamError) as refused:
        batcher.submit(rows(1))
    batcher.stop()

    # Assert
    assert refused.value.reason is Reason.OVERLOADED
    assert batcher.stats() == {"passes": 0, "queued_rows": 0}
    for future in waiting:
        error = future.exception(timeout=1)
        assert isinstance(error, FedstreamError) and error.reason is Reason.OVERLOADED


def test_request_before_any_model_is_no_model(
    make_batcher: Callable[..., MicroBatcher], rows: Rows
) -> None:
    """Nothing is queued while no version is served."""
    # Prepare
    batcher = make_batcher()

    # Execute
    with pytest.raises(FedstreamError) as info:
        batcher.submit(rows(1))

    # Assert
    assert info.value.reason is Reason.NO_MODEL
    assert batcher.stats()["queued_rows"] == 0


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        (np.zeros((2, 7), np.float32), Reason.SPEC_MISMATCH),
        (np.zeros((2, 9), np.float32), Reason.SPEC_MISMATCH),
        (np.zeros(8, np.float32), Reason.BAD_FRAME),
        (np.zeros((0, 8), np.float32), Reason.BAD_FRAME),
        (np.zeros((5, 8), np.float32), Reason.BAD_FRAME),
        (np.array([[0.0] * 7 + [np.nan]], np.float32), Reason.NON_FINITE),
        (np.array([[np.inf] * 8], np.float32), Reason.NON_FINITE),
    ],
    ids=["narrow", "wide", "one-dimensional", "no-rows", "over-max-rows", "nan", "inf"],
)
def test_malformed_rows_are_refused(
    make_batcher: Callable[..., MicroBatcher], served: Served,
    features: npt.NDArray[np.float32], reason: Reason,
) -> None:
    """Wrong width is spec_mismatch, a bad shape or too many rows bad_frame, NaN/Inf non_finite."""
    # Prepare
    batcher = make_batcher(max_rows=4)
    batcher.swap(served(1))

    # Execute
    with pytest.raises(ProtocolError) as info:
        batcher.submit(features)

    # Assert
    assert info.value.reason is reason


def test_stop_answers_everything_queued_then_refuses(
    make_batcher: Callable[..., MicroBatcher], served: Served, rows: Rows
) -> None:
    """Requests waiting for a batch to fill are answered at stop, not dropped or left hanging."""
    # Prepare
    batcher = make_batcher(max_batch=64, max_wait_ms=60_000)
    batcher.swap(served(1))
    batcher.start()
    futures = [batcher.submit(rows(2)) for _ in range(3)]

    # Execute
    batcher.stop()
    with pytest.raises(FedstreamError) as late:
        batcher.submit(rows(1))

    # Assert
    assert [a.version for a in _answers(futures)] == [1, 1, 1]
    assert late.value.reason is Reason.OVERLOADED


def test_a_failed_forward_pass_fails_its_requests_and_the_worker_goes_on(
    make_batcher: Callable[..., MicroBatcher], served: Served,
    preparer_for: Callable[[Architecture], ServedModel], rows: Rows,
) -> None:
    """A model that cannot take the rows fails that batch's futures; the next version serves."""
    # Prepare
    batcher = make_batcher()
    batcher.swap(preparer_for(Architecture.mlp((5, 4))))  # takes 5 features, the batcher sends 8
    batcher.start()
    failed = batcher.submit(rows(1))
    failed.exception(timeout=10)

    # Execute
    batcher.swap(served(2))
    answer = batcher.submit(rows(1)).result(timeout=10)

    # Assert
    assert isinstance(failed.exception(), RuntimeError)
    assert answer.version == 2


def test_each_batch_is_answered_by_the_version_served_when_it_ran(
    make_batcher: Callable[..., MicroBatcher], served: Served, rows: Rows
) -> None:
    """Requests queued under one version but run after a swap name the new version."""
    # Prepare
    batcher = make_batcher()
    batcher.swap(served(1))
    queued = [batcher.submit(rows(1)) for _ in range(3)]

    # Execute
    batcher.swap(served(2))
    batcher.start()

    # Assert
    assert [a.version for a in _answers(queued)] == [2, 2, 2]
