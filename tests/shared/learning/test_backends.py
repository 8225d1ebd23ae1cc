"""Tests for shared/learning/backends: the registry, each backend, and select_backend."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs
from torch.nn import functional

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.backends import BACKENDS, Backend, ipex_status, select_backend
from fedstream.shared.learning.backends.ipex import check_versions
from fedstream.shared.learning.cpu import detect_cpu, parse_cpuinfo

select_module = importlib.import_module("fedstream.shared.learning.backends.selection")
STOCK = "fedstream.shared.learning.backends.stock"


def _build_or_skip(name: str, **params: object) -> Backend:
    try:
        return BACKENDS.build(name, **params)
    except ConfigError as err:
        if err.reason is Reason.BACKEND_UNAVAILABLE:
            pytest.skip(f"{name} unavailable: {err.detail}")
        raise


def _expected_auto_backend() -> str:
    """What "auto" must pick, decided here from package metadata independently of the code."""
    try:
        ipex_version = metadata.version("intel-extension-for-pytorch")
    except metadata.PackageNotFoundError:
        return "torch"
    same = ipex_version.split(".")[:2] == torch.__version__.split("+")[0].split(".")[:2]
    return "ipex" if same else "torch"


def _tiny_problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(32, 8)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return model, x, y


def _digits_probe() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    )
    return model, torch.randn(32, 64), torch.randint(0, 10, (32,))


@pytest.mark.parametrize("name", BACKENDS.names())
def test_every_backend_builds_with_defaults(name: str) -> None:
    """Every registered backend has a summary and builds with default params when available."""
    # Execute
    backend = _build_or_skip(name)

    # Assert
    assert BACKENDS.summary(name)
    assert backend.name == name
    assert backend.precision == "fp32"


@pytest.mark.parametrize("name", BACKENDS.names())
def test_unknown_precision_is_bad_config(name: str) -> None:
    """A precision outside fp32/bf16 is rejected as bad config, not passed on to torch."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        BACKENDS.build(name, precision="fp16")

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG


def test_stock_bf16_without_native_bf16_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock bf16 on a CPU without native bf16 still builds but logs that it will be slow."""
    # Prepare
    old_cpu = parse_cpuinfo("model name\t: Old\nflags\t\t: avx2\n")
    monkeypatch.setattr(importlib.import_module(STOCK), "detect_cpu", lambda: old_cpu)

    # Execute
    with capture_logs() as logs:
        backend = BACKENDS.build("torch", precision="bf16")

    # Assert
    assert backend.precision == "bf16"
    assert [e["event"] for e in logs] == ["slow_precision_selected"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", BACKENDS.names())
def test_training_steps_reduce_loss(name: str, precision: str) -> None:
    """Ten SGD steps through the backend lower the loss on a tiny separable problem."""
    # Prepare
    backend = _build_or_skip(name, precision=precision)
    model, x, y = _tiny_problem()
    model, optimizer = backend.prepare_training(model, torch.optim.SGD(model.parameters(), lr=0.5))

    def loss_now() -> float:
        with torch.no_grad(), backend.autocast():
            return float(functional.cross_entropy(model(x), y))

    before = loss_now()

    # Execute
    for _ in range(10):
        optimizer.zero_grad()
        with backend.autocast():
            loss = functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    # Assert
    assert loss_now() < before * 0.9


@pytest.mark.parametrize("name", BACKENDS.names())
def test_prepare_inference_leaves_training_model_alone(name: str) -> None:
    """The inference model is in eval mode without grads, and the caller's model still trains."""
    # Prepare
    backend = _build_or_skip(name)
    model, x, _ = _tiny_problem()

    # Execute
    served = backend.prepare_inference(model)
    with torch.no_grad(), backend.autocast():
        out = served(x)

    # Assert
    assert out.shape == (32, 2)
    assert not served.training
    assert not any(p.requires_grad for p in served.parameters())
    assert model.training
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("ipex_version", "torch_version", "usable", "reason"),
    [
        ("2.8.0", "2.8.0+cpu", True, "ipex 2.8.0 matches torch 2.8.0"),
        ("2.8.10+xpu", "2.8.1", True, "ipex 2.8.10+xpu matches torch 2.8.1"),
        ("2.8.0", "2.13.0+cpu", False, "ipex 2.8.0 does not match torch 2.13.0"),
        ("2.7.0", "2.8.0", False, "ipex 2.7.0 does not match torch 2.8.0"),
        (None, "2.8.0", False, "intel-extension-for-pytorch not installed"),
    ],
)
def test_check_versions(
    ipex_version: str | None, torch_version: str, usable: bool, reason: str
) -> None:
    """IPEX is usable only when its major.minor equals torch's, ignoring local tags."""
    # Execute
    result = check_versions(ipex_version, torch_version)

    # Assert
    assert result == (usable, reason)


def test_auto_picks_ipex_only_when_it_matches_torch() -> None:
    """With no preference, IPEX is chosen exactly when it is installed for this torch minor."""
    # Prepare
    expected = _expected_auto_backend()

    # Execute
    with capture_logs() as logs:
        choice = select_backend()

    # Assert
    assert choice.backend.name == expected
    assert choice.backend.precision == "fp32"
    assert choice.bf16_speedup is None
    assert ("matches torch" in choice.reason) is (expected == "ipex")
    assert [e["backend"] for e in logs if e["event"] == "backend_selected"] == [expected]


def test_forced_ipex_when_unavailable_raises() -> None:
    """Forcing IPEX where it cannot load is an error, not a silent fall-back to torch."""
    # Prepare
    if _expected_auto_backend() == "ipex":
        pytest.skip("ipex is usable on this stack")

    # Execute
    with pytest.raises(ConfigError) as caught:
        select_backend(preference="ipex")

    # Assert
    assert caught.value.reason is Reason.BACKEND_UNAVAILABLE


def test_unknown_preference_is_unknown_name() -> None:
    """A preference that names no backend fails with the list of known names."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        select_backend(preference="cuda")

    # Assert
    assert caught.value.reason is Reason.UNKNOWN_NAME
    assert "ipex, torch" in caught.value.detail


def test_auto_precision_without_bf16_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU without native bf16, auto precision is fp32 and nothing is timed."""
    # Prepare
    old_cpu = parse_cpuinfo("model name\t: Old\nflags\t\t: avx2\n")
    monkeypatch.setattr(select_module, "detect_cpu", lambda: old_cpu)

    def probe() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
        raise AssertionError("probe must not run")

    # Execute
    choice = select_backend(preference="torch", probe=probe)

    # Assert
    assert choice.backend.precision == "fp32"
    assert choice.bf16_speedup is None
    assert "neither avx512_bf16 nor amx_bf16" in choice.reason
    assert choice.describe()["model_name"] == old_cpu.model_name
    assert choice.describe()["avx512_bf16"] is False


def test_auto_precision_with_probe_measures_bf16() -> None:
    """With native bf16 and a probe, the faster precision is chosen and the speedup recorded."""
    # Prepare
    if not detect_cpu().has_bf16:
        pytest.skip("cpu has no native bf16")
    probe_model, x, y = _digits_probe()
    weights_before = [p.detach().clone() for p in probe_model.parameters()]

    # Execute
    choice = select_backend(probe=lambda: (probe_model, x, y))

    # Assert
    assert choice.bf16_speedup is not None and choice.bf16_speedup > 0
    assert choice.backend.precision == ("bf16" if choice.bf16_speedup > 1.0 else "fp32")
    assert choice.describe()["bf16_speedup"] == round(choice.bf16_speedup, 3)
    after = list(probe_model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights_before, after, strict=True))


_FAKE_IPEX = """
import os
open(os.environ["FAKE_IPEX_MARKER"], "w").close()
os._exit(3)
"""

_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from fedstream.shared.learning.backends import select_backend
print(json.dumps(select_backend().describe()))
"""


def test_mismatched_ipex_is_never_imported(tmp_path: Path) -> None:
    """An IPEX built for another torch is detected from metadata and never imported."""
    # Prepare
    site = tmp_path / "site"
    (site / "intel_extension_for_pytorch").mkdir(parents=True)
    (site / "intel_extension_for_pytorch" / "__init__.py").write_text(_FAKE_IPEX)
    dist_info = site / "intel_extension_for_pytorch-2.7.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: intel-extension-for-pytorch\nVersion: 2.7.0\n"
    )
    marker = tmp_path / "imported"
    env = {**os.environ, "FAKE_IPEX_MARKER": str(marker)}

    # Execute
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    # Assert
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout.strip().splitlines()[-1])
    assert described["backend"] == "torch"
    torch_base = torch.__version__.split("+")[0]
    assert f"ipex 2.7.0 does not match torch {torch_base}" in described["reason"]
    assert not marker.exists()


_POOL_CHILD = """
from fedstream.shared.learning.backends import BACKENDS
BACKENDS.build("ipex", precision="fp32")
import torch._inductor.config as inductor
print(inductor.compile_threads)
"""


def test_loading_ipex_starts_no_compile_worker_pool() -> None:
    """IPEX's import pulls in torch._inductor; with more than one compile thread inductor
    starts a pool of worker processes (585 MiB each, unused here). The IPEX backend loads it
    with one thread: compiling, if ever, in-process."""
    # Prepare
    if not ipex_status()[0]:
        pytest.skip("IPEX is not usable on this stack")
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_COMPILE_THREADS"}

    # Execute
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_POOL_CHILD)],
                          capture_output=True, text=True, env=env, timeout=180, check=False)

    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "1"
