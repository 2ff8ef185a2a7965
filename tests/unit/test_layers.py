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


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
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


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    forbidden = _forbidden(layer)
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for name in _imports(path)
        if name == "sagaway" or any(name == f or name.startswith(f"{f}.") for f in forbidden)
    ]
    assert offences == []


def test_the_rule_sees_an_offence() -> None:
    # The check itself must be able to fail: a services module importing the CLI.
    assert any(
        f == "sagaway.cli" or "sagaway.cli".startswith(f"{f}.") for f in _forbidden("services")
    )
    assert "sagaway.services" in _forbidden("orchestrator")
