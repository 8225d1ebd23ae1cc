"""The house arrows: edge_node -> shared <- cloud; pure modules import no I/O libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "shared": ("fedstream.cloud", "fedstream.edge_node", "fedstream.broker"),
    "shared/protocol": ("fedstream.shared.learning",),
    "edge_node": ("fedstream.cloud",),
    "cloud": ("fedstream.edge_node",),
    "broker": ("fedstream.cloud", "fedstream.edge_node"),
}
PURE = ["shared/protocol/chunks.py", "shared/protocol/codecs", "shared/protocol/messages.py",
        "shared/protocol/control.py", "shared/protocol/infer.py", "cloud/rounds.py",
        "shared/protocol/data.py",
        "cloud/strategies", "cloud/continual.py", "cloud/forgetting.py", "cloud/gate.py",
        "cloud/defences.py",
        "edge_node/sensors/reading.py", "edge_node/sensors/channels.py",
        "shared/learning/series/align.py",
        "shared/learning/series/windows.py", "shared/learning/series/stream.py",
        "edge_node/sensors/formats/base.py", "edge_node/sensors/formats/senml.py",
        "edge_node/sensors/formats/json_fields.py", "edge_node/sensors/formats/bare.py",
        "shared/protocol/history.py", "fedstream/describe.py", "fedstream/tables.py",
        "fedstream/documents.py", "fedstream/failures.py",
        "edge_node/status_line.py", "cloud/status_line.py"]
IO_MODULES = ("paho", "sqlite3", "socket", "subprocess", "msgpack")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _files(rel: str) -> list[Path]:
    path = ROOT / rel
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_along_the_arrows(package: str) -> None:
    """No module of a package imports a package the design rules out."""
    # Execute
    bad = [(f.relative_to(ROOT), name) for f in _files(package) for name in _imports(f)
           if name.startswith(FORBIDDEN[package]) or name.split(".")[0] in ("cloud", "shared",
                                                                           "edge_node")]

    # Assert
    assert bad == []


@pytest.mark.parametrize("rel", PURE)
def test_pure_modules_do_no_io(rel: str) -> None:
    """Codec, chunking, messages, rounds and strategies import no network, disk or wire library."""
    # Execute
    bad = [(f.relative_to(ROOT), name) for f in _files(rel) for name in _imports(f)
           if name.split(".")[0] in IO_MODULES]

    # Assert
    assert bad == []
