"""backends/ knows keys and bytes only: it must never import syncagent."""

import ast
from pathlib import Path

BACKENDS = Path(__file__).resolve().parents[2] / "backends"


def test_backends_never_import_syncagent():
    offenders = []
    for path in sorted(BACKENDS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "syncagent" or n.startswith("syncagent.")]
    assert offenders == []
    assert len(list(BACKENDS.glob("*.py"))) >= 5
