"""IPEX's deprecation notices on every `optimize` are dropped where they are raised."""

from __future__ import annotations

import importlib
import io
import logging
import warnings

import pytest
import torch

from fedstream.shared.learning.backends import BACKENDS, ipex_status
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.arch import Architecture, TaskKind

CNN = Architecture(family="cnn1d", input_shape=(6, 20), task=TaskKind.CLASSIFICATION,
                   outputs=4, params={"channels": (16, 16), "kernel": 5})
LOGGERS = ("IPEX", "intel_extension_for_pytorch.nn.utils._weight_prepack")


def _notices(optimize: object) -> tuple[list[str], str]:
    """The warnings and IPEX log lines raised while `optimize()` runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimize()  # type: ignore[operator]
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    return [str(w.message) for w in caught], stream.getvalue()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_optimize_through_the_backend_says_nothing_deprecated(precision: str) -> None:
    """Training and inference preparation of a Conv1d model log and warn nothing about
    deprecations, while a bare `ipex.optimize` of the same model does (both kinds)."""
    # Prepare
    if not ipex_status()[0]:
        pytest.skip(ipex_status()[1])
    backend = BACKENDS.build("ipex", precision=precision)
    ipex = importlib.import_module("intel_extension_for_pytorch")

    def through_backend() -> None:
        model = build_model(CNN)
        backend.prepare_training(model, torch.optim.SGD(model.parameters(), lr=0.1))
        backend.prepare_inference(model)

    def bare() -> None:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = build_model(CNN).train()
        ipex.optimize(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      dtype=dtype)
        ipex.optimize(build_model(CNN).eval().requires_grad_(False), dtype=dtype, inplace=True)

    # Execute
    quiet_warnings, quiet_log = _notices(through_backend)
    loud_warnings, loud_log = _notices(bare)

    # Assert
    assert [w for w in quiet_warnings if "deprecated" in w] == []
    assert "deprecated" not in quiet_log
    assert any("channels_last_1d(args...)` is deprecated" in w for w in loud_warnings)
    assert "'fuse_update_step' will be deprecated" in loud_log
    assert "Conv1d channels last support will be deprecated" in loud_log
