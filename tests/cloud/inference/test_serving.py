"""The served model (cloud/inference/serving.py): preparing versions and choosing precision."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import torch

from fedstream.cloud.inference.serving import ModelPreparer, ServedModel, Trial, choose_precision
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.arch import Architecture

Rows = Callable[[int], npt.NDArray[np.float32]]


@pytest.mark.parametrize(
    ("fp32", "bf16", "chosen", "why"),
    [
        (Trial(0.950, 2.0), Trial(0.948, 1.0), "bf16", "bf16: 2.00x faster, 0.20 accuracy"),
        (Trial(0.950, 2.0), Trial(0.945, 1.0), "bf16", "bf16: 2.00x faster, 0.50 accuracy"),
        (Trial(0.950, 2.0), Trial(0.940, 1.0), "fp32", "fp32: bf16 lost 1.00 accuracy"),
        (Trial(0.950, 1.0), Trial(0.960, 1.0), "fp32", "fp32: bf16 ran at 1.00x"),
        (Trial(0.950, 1.0), Trial(0.950, 4.0), "fp32", "fp32: bf16 ran at 0.25x"),
    ],
    ids=["close-and-faster", "at-the-tolerance", "too-inaccurate", "same-speed", "slower"],
)
def test_choose_precision(fp32: Trial, bf16: Trial, chosen: str, why: str) -> None:
    """bf16 wins only within half an accuracy point of fp32 and when measured faster."""
    # Execute
    precision, reason = choose_precision(fp32, bf16)

    # Assert
    assert precision == chosen
    assert reason.startswith(why)


def test_prepared_model_predicts_like_the_plain_model(
    served: Callable[[int], ServedModel], arch: Architecture, rows: Rows
) -> None:
    """Classes and top probabilities equal those of the unoptimized model with the same weights."""
    # Prepare
    model = served(3)
    plain = build_model(arch, seed=3).eval()
    x = rows(20)

    # Execute
    classes, scores = model.predict(x)

    # Assert
    with torch.no_grad():
        probs = torch.softmax(plain(torch.from_numpy(x)), dim=1)
    assert model.version == 3 and model.precision == "fp32"
    assert classes.tolist() == probs.argmax(dim=1).tolist()
    np.testing.assert_allclose(scores, probs.max(dim=1).values.numpy(), rtol=1e-5)


def test_forced_bf16_serves_in_bf16(
    arch: Architecture, weights: Callable[[int], list[torch.Tensor]], rows: Rows
) -> None:
    """precision "bf16" is taken as asked, and its scores stay close to fp32's."""
    # Prepare
    fp32 = ModelPreparer(arch=arch, precision="fp32").prepare(1, weights(1))
    bf16 = ModelPreparer(arch=arch, precision="bf16").prepare(1, weights(1))
    x = rows(16)

    # Execute
    (_, want), (_, got) = fp32.predict(x), bf16.predict(x)

    # Assert
    assert bf16.precision == "bf16" and bf16.reason == "precision bf16 requested"
    np.testing.assert_allclose(got, want, atol=0.05)


def test_auto_without_evaluation_set_serves_fp32(
    arch: Architecture, weights: Callable[[int], list[torch.Tensor]]
) -> None:
    """precision "auto" with nothing to check bf16 accuracy on stays fp32 and says why."""
    # Prepare
    preparer = ModelPreparer(arch=arch, precision="auto")

    # Execute
    model = preparer.prepare(1, weights(1))

    # Assert
    assert model.precision == "fp32"
    assert model.reason.startswith("fp32: ")


def test_auto_with_evaluation_set_decides_by_measurement(
    arch: Architecture, weights: Callable[[int], list[torch.Tensor]], rows: Rows
) -> None:
    """precision "auto" with labelled rows picks a precision and gives the reason for it."""
    # Prepare
    x = rows(64)
    labels = build_model(arch, seed=1).eval()(torch.from_numpy(x)).argmax(dim=1).numpy()
    preparer = ModelPreparer(arch=arch, precision="auto", evaluation=(x, labels))

    # Execute
    first = preparer.prepare(1, weights(1))
    second = preparer.prepare(2, weights(2))

    # Assert
    if not detect_cpu().has_bf16:
        assert first.reason == "fp32: cpu has neither avx512_bf16 nor amx_bf16"
    else:
        assert first.reason.startswith(("bf16: ", "fp32: bf16 "))
    assert first.precision in ("fp32", "bf16") and second.version == 2


def test_tensors_of_another_architecture_are_a_spec_mismatch(
    preparer: ModelPreparer
) -> None:
    """Weights that do not fit the architecture are refused before anything is served."""
    # Prepare
    other = [t.detach()
             for t in build_model(Architecture.mlp((8, 5, 4)), seed=0).state_dict().values()]

    # Execute
    with pytest.raises(ConfigError) as info:
        preparer.prepare(1, other)

    # Assert
    assert info.value.reason is Reason.SPEC_MISMATCH


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"precision": "fp16"}, Reason.BAD_CONFIG),
        ({"backend": "tpu"}, Reason.UNKNOWN_NAME),
        ({"evaluation": (np.zeros((4, 3), np.float32), np.zeros(4, np.int64))},
         Reason.BAD_CONFIG),
    ],
    ids=["unknown-precision", "unknown-backend", "evaluation-too-narrow"],
)
def test_bad_settings_are_config_errors(
    arch: Architecture, kwargs: dict[str, object], reason: Reason
) -> None:
    """An unknown precision or backend, or evaluation rows of the wrong width, fail at setup."""
    # Execute
    with pytest.raises(ConfigError) as info:
        ModelPreparer(arch=arch, **kwargs)  # type: ignore[arg-type]

    # Assert
    assert info.value.reason is reason


def test_forward_passes_on_another_thread_survive_preparing(
    preparer: ModelPreparer, served: Callable[[int], ServedModel],
    weights: Callable[[int], list[torch.Tensor]], rows: Rows,
) -> None:
    """Preparing versions (IPEX traces them with torch.fx) never breaks a concurrent forward."""
    # Prepare
    model, x = served(1), rows(2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                model.predict(x)
            except Exception as err:  # recorded for the assert
                errors.append(err)
                return

    server = threading.Thread(target=serve)
    server.start()

    # Execute
    try:
        for version in range(2, 52):
            preparer.prepare(version, weights(version))
    finally:
        stop.set()
        server.join()

    # Assert
    assert errors == []
