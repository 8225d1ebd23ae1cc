"""Tests for the built-in model families (shared/learning/models): build, wire, train, fail."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.backends import BACKENDS, Backend, ipex_status
from fedstream.shared.learning.model import load_tensors, tensors_of
from fedstream.shared.learning.models import MODELS, build_model
from fedstream.shared.learning.tasks import task_for
from fedstream.shared.learning.training import Batch, prepare_sgd, train_steps
from fedstream.shared.protocol.arch import Architecture, Param, TaskKind

SHAPE = (3, 12)  # channels x steps, small enough for a few hundred steps in seconds
SMALL: dict[str, dict[str, Param]] = {
    "mlp": {"hidden": (16,)},
    "cnn1d": {"channels": (8, 8), "kernel": 3, "dilation": 2},
    "gru": {"hidden": 12},
    "transformer": {"dim": 8, "heads": 2, "layers": 1, "ff": 16},
}
FAMILIES = sorted(SMALL)
SEQUENCE_FAMILIES = ["cnn1d", "gru", "transformer"]
BACKEND_CASES = [("torch", "fp32"), ("torch", "bf16"), ("ipex", "fp32"), ("ipex", "bf16")]
OUTPUTS = {TaskKind.CLASSIFICATION: 2, TaskKind.REGRESSION: 2}

# Known, harmless IPEX noise: it overrides aten::layer_norm without an autograd kernel (the
# gradients match stock torch's exactly), and its conv1d prepack calls a deprecated helper.
pytestmark = [pytest.mark.filterwarnings("ignore:aten..layer_norm:UserWarning"),
              pytest.mark.filterwarnings("ignore:.*channels_last_1d.*is deprecated")]


def _arch(family: str, task: TaskKind = TaskKind.CLASSIFICATION,
          params: Mapping[str, Param] | None = None,
          shape: tuple[int, ...] = SHAPE) -> Architecture:
    return Architecture(family=family, input_shape=shape, task=task, outputs=OUTPUTS[task],
                        params=SMALL[family] if params is None else params)


def _backend_or_skip(name: str, precision: str) -> Backend:
    if name == "ipex" and not ipex_status()[0]:
        pytest.skip(f"ipex unusable here: {ipex_status()[1]}")
    return BACKENDS.build(name, precision=precision)


def _data(task: TaskKind, n: int, seed: int) -> Batch:
    """Noise windows any family can learn from: channel 0 is shifted by +-0.7 per class, or
    the targets are 3x the time means of channels 0 and 1."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, generator=gen)
    if task is TaskKind.CLASSIFICATION:
        labels = torch.randint(0, 2, (n,), generator=gen)
        x[:, 0] += 0.7 * (2.0 * labels[:, None] - 1.0)
        return x.reshape(n, -1), labels
    return x.reshape(n, -1), 3.0 * x[:, :2].mean(dim=2)


def _loss(arch: Architecture, tensors: list[torch.Tensor], data: Batch) -> float:
    """Task loss of `tensors` loaded into a fresh fp32 build, in eval mode."""
    model = build_model(arch)
    load_tensors(model, tensors)
    model.eval()
    with torch.no_grad():
        return float(task_for(arch.task).loss(model(data[0]), data[1]))


@pytest.mark.parametrize("family", MODELS.names())
def test_every_family_builds_with_defaults_and_has_summary(family: str) -> None:
    """Each registered family builds from default params for a 6 x 20 window, with a summary."""
    # Prepare
    arch = Architecture(family=family, input_shape=(6, 20), task=TaskKind.CLASSIFICATION,
                        outputs=4)

    # Execute
    model = build_model(arch, seed=0)
    out = model(torch.randn(5, 120))

    # Assert
    assert out.shape == (5, 4)
    assert out.dtype == torch.float32
    assert MODELS.summary(family)


@pytest.mark.parametrize("task", list(TaskKind))
@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_from_architecture(family: str, task: TaskKind) -> None:
    """Small params build a module mapping flat rows `[N, 36]` to `[N, outputs]` for each task."""
    # Prepare
    arch = _arch(family, task)

    # Execute
    model = build_model(arch, seed=1)
    out = model(torch.randn(7, 36))

    # Assert
    assert isinstance(model, torch.nn.Module)
    assert out.shape == (7, 2)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_build_is_deterministic(family: str) -> None:
    """The same seed gives an identical state dict; another seed gives different weights."""
    # Prepare
    arch = _arch(family)

    # Execute
    first, again, other = (build_model(arch, seed=s).state_dict() for s in (7, 7, 8))

    # Assert
    assert list(first) == list(again) == list(other)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("family", FAMILIES)
def test_wire_round_trip_rebuilds_the_same_tensors(family: str) -> None:
    """`from_wire(to_wire())` gives an equal architecture whose build has the same tensor spec."""
    # Prepare
    arch = _arch(family, TaskKind.REGRESSION)

    # Execute
    back = Architecture.from_wire(arch.to_wire())
    sent, rebuilt = build_model(arch, seed=3).state_dict(), build_model(back, seed=3).state_dict()

    # Assert
    assert back == arch
    assert [(k, v.shape) for k, v in rebuilt.items()] == [(k, v.shape) for k, v in sent.items()]
    assert all(torch.equal(sent[k], rebuilt[k]) for k in sent)


@pytest.mark.parametrize(("backend_name", "precision"), BACKEND_CASES)
@pytest.mark.parametrize("task", list(TaskKind))
@pytest.mark.parametrize("family", FAMILIES)
def test_sgd_steps_lower_the_loss(family: str, task: TaskKind, backend_name: str,
                                  precision: str) -> None:
    """25 SGD steps on a learnable task halve the held-out loss of what `tensors_of` returns."""
    # Prepare
    backend = _backend_or_skip(backend_name, precision)
    arch = _arch(family, task)
    start = tensors_of(build_model(arch, seed=0))
    held_out = _data(task, 256, seed=99)
    batches = [_data(task, 32, seed=i) for i in range(25)]
    model, optimizer = prepare_sgd(arch, start, backend, lr=0.15, momentum=0.9)

    # Execute
    stats = train_steps(model, optimizer, backend, batches, arch=arch)
    trained = tensors_of(model)

    # Assert
    assert stats.steps == 25
    assert [t.shape for t in trained] == [t.shape for t in start]
    assert all(t.dtype == torch.float32 for t in trained)
    assert _loss(arch, trained, held_out) < 0.5 * _loss(arch, start, held_out)


@pytest.mark.parametrize(("backend_name", "precision"), BACKEND_CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_backend_inference_matches_the_plain_model(family: str, backend_name: str,
                                                   precision: str) -> None:
    """`prepare_inference` under the backend's autocast predicts what the plain fp32 model does."""
    # Prepare
    backend = _backend_or_skip(backend_name, precision)
    arch = _arch(family)
    plain = build_model(arch, seed=0).eval()
    x = _data(TaskKind.CLASSIFICATION, 16, seed=5)[0]
    with torch.no_grad():
        expected = plain(x)

    # Execute
    served = backend.prepare_inference(plain)
    with torch.no_grad(), backend.autocast():
        out = served(x)

    # Assert
    assert out.shape == (16, 2)
    tolerance = 1e-4 if precision == "fp32" else 0.1
    assert torch.allclose(out.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("shape", [(36,), (3, 3, 4)])
@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_sequence_family_refuses_other_input_ranks(family: str, shape: tuple[int, ...]) -> None:
    """A sequence family needs `(channels, steps)`; any other rank is bad_config saying so."""
    # Prepare
    arch = _arch(family, shape=shape)

    # Execute
    with pytest.raises(ConfigError) as caught:
        build_model(arch)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert "(channels, steps)" in caught.value.detail


@pytest.mark.parametrize(("family", "params", "says"), [
    ("mlp", {"hidden": (16, 0)}, "positive"),
    ("cnn1d", {"kernel": 4}, "odd"),
    ("cnn1d", {"kernel": 0}, "odd"),
    ("cnn1d", {"channels": ()}, "channels"),
    ("cnn1d", {"channels": (8, -1)}, "channels"),
    ("cnn1d", {"dilation": 0}, "dilation"),
    ("gru", {"hidden": 0}, "hidden"),
    ("gru", {"layers": 0}, "layers"),
    ("gru", {"hidden": 12.0}, "hidden"),
    ("transformer", {"dim": 10, "heads": 4}, "not divisible by heads"),
    ("transformer", {"heads": 0}, "heads"),
    ("transformer", {"dropout": 1.0}, "dropout"),
    ("transformer", {"dropout": True}, "dropout"),
])
def test_bad_params_are_bad_config(family: str, params: dict[str, Param], says: str) -> None:
    """A parameter value the family refuses is bad_config naming what is wrong."""
    # Prepare
    arch = _arch(family, params=params)

    # Execute
    with pytest.raises(ConfigError) as caught:
        build_model(arch)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert says in caught.value.detail


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_param_name_is_bad_config(family: str) -> None:
    """A parameter the family does not take is bad_config listing the ones it does take."""
    # Prepare
    arch = _arch(family, params={"widht": 3})

    # Execute
    with pytest.raises(ConfigError) as caught:
        build_model(arch)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert "widht" in caught.value.detail
    assert "parameters: input_shape, outputs" in caught.value.detail


def test_unknown_family_is_unknown_name() -> None:
    """An unregistered family is unknown_name, listing every built-in family."""
    # Prepare
    arch = Architecture(family="lstm", input_shape=SHAPE, task=TaskKind.CLASSIFICATION,
                        outputs=2)

    # Execute
    with pytest.raises(ConfigError) as caught:
        build_model(arch)

    # Assert
    assert caught.value.reason is Reason.UNKNOWN_NAME
    assert "'lstm'" in caught.value.detail
    assert all(name in caught.value.detail for name in FAMILIES)
