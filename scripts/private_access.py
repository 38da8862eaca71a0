"""List reads of another object's private attributes (``obj._name`` where ``obj`` is not ``self``/``cls``).

The house rule (docs/architecture.md): a module never reaches into another module's objects' private state. A
private name may be used on ``self``/``cls``, on a module-level name of the same module, or on an object of a
class defined in the same module (listed in ALLOWED with the reason). Exit 1 when anything else is found.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("fieldhub", "bench", "sim", "hub", "drone", "video", "devices", "geo")
# Library APIs whose public names start with one underscore.
PUBLIC_UNDERSCORE = {"_asdict", "_replace", "_fields", "_make", "_field_defaults", "_exit", "_getframe"}


def classes_of(tree: ast.Module) -> set[str]:
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__") or name in PUBLIC_UNDERSCORE:
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("self", "cls"):
            continue
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
            continue
        found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    out = [f for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py")) for f in findings(p)]
    print("\n".join(out))
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main())
