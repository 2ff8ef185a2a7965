"""Layers point one way: outbox <- orchestrator <- services <- the composition root.

Nothing below imports from above, and the runtime never imports the benchmarks, the
DBOS peer or the test kit (they are imported lazily by the commands that need them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("outbox", "orchestrator", "services")
ROOT_MODULES = {p.stem for p in (ROOT / "sagaway").glob("*.py") if p.stem != "__init__"} | {
    "runners",
    "bench",
    "bench_peer",
    "testing",
}
NOT_RUNTIME = ("sagaway.bench", "sagaway.bench_peer", "sagaway.testing", "httpx", "aiohttp", "dbos")


def _imports(path: Path, *, top_level: bool = False) -> list[str]:
    """Every module ``path`` imports (only those imported when it loads, with
    ``top_level``: not inside a function or an ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _forbidden(layer: str) -> tuple[str, ...]:
    above = LAYERS[LAYERS.index(layer) + 1 :]
    return (
        *(f"sagaway.{a}" for a in above),
        *(f"sagaway.{m}" for m in sorted(ROOT_MODULES)),
        *NOT_RUNTIME,
    )


def _offences(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.name} imports {name}"
        for path in paths
        for name in _imports(path)
        if name == "sagaway" or any(name == f or name.startswith(f"{f}.") for f in forbidden)
    ]


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    assert _offences(sorted((ROOT / layer).rglob("*.py")), _forbidden(layer)) == []


def test_the_root_s_runtime_modules_import_no_bench_and_no_test_kit_at_load() -> None:
    # The CLI imports the bench inside the commands that run it, never at load.
    root = sorted((ROOT / "sagaway").glob("*.py")) + sorted((ROOT / "sagaway/runners").glob("*.py"))
    offences = [
        f"{path.name} imports {name}"
        for path in root
        for name in _imports(path, top_level=True)
        if any(name == f or name.startswith(f"{f}.") for f in NOT_RUNTIME)
    ]
    assert offences == []


def test_the_rule_sees_an_offence(tmp_path: Path) -> None:
    # The check itself must be able to fail: a services module importing the CLI.
    offender = tmp_path / "offender.py"
    offender.write_text("from sagaway.cli import app\nimport sagaway\n", encoding="utf-8")
    assert _offences([offender], _forbidden("services")) == [
        "offender.py imports sagaway.cli",
        "offender.py imports sagaway.cli.app",
        "offender.py imports sagaway",
    ]
    assert "sagaway.services" in _forbidden("orchestrator")
