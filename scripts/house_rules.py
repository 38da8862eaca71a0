"""Two house rules the linters do not check (docs/architecture.md), for the product's packages.

1. No module reads another object's private attributes (``obj._name`` where ``obj`` is not ``self``/``cls``);
   a collaborator gets a public method or a narrow Protocol instead.
2. No module is longer than MAX_LINES lines.

The only exceptions to rule 1 are third-party internals with no public equivalent, each adapted in one place and
listed in ALLOWED with the reason. ``make lint`` runs this;
exit 1 when anything breaks a rule.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 400
PACKAGES = ("fieldhub", "bench", "sim", "hub", "drone", "video", "gb28181", "jt808", "devices", "geo")
# Library APIs whose public names start with one underscore.
PUBLIC_UNDERSCORE = {"_asdict", "_replace", "_fields", "_make", "_field_defaults", "_exit", "_getframe"}
# (file, attribute): why a library's private name is read there.
ALLOWED = {
    **{(f, "_SubParsersAction"): "argparse: the type of add_subparsers()' result has no public name"
       for f in ("bench/cli.py", "sim/cli.py", "hub/cli.py")},
    **{("hub/ingest/bridge.py", a): "gmqtt: PUBACK after commit needs its QoS 1 handler (version pinned narrowly)"
       for a in ("_package_handler", "_handle_qos_1_publish_packet", "_send_puback")},
    **{("devices/client.py", a): "gmqtt: the device's socket, to cut a radio link without a DISCONNECT"
       for a in ("_connection", "_transport")},
    **{("video/forward.py", a): "aiortc: asking a publisher for a key frame (RTCP PLI) has no public API"
       for a in ("_send_keyframe", "_send_rtcp_pli")},
}


def findings(path: Path, rel: str) -> list[str]:
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
        if (rel, name) in ALLOWED:
            continue
        found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    modules = [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    private = [f for p in modules for f in findings(p, p.relative_to(root).as_posix())]
    if private:
        print("reads of another object's private attributes (give it a public method or a Protocol):")
        print("\n".join(private))
    long = [f"{p.relative_to(root)}: {n} lines" for p in modules
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    if long:
        print(f"modules over {MAX_LINES} lines (split them by job):")
        print("\n".join(long))
    return 1 if private or long else 0


if __name__ == "__main__":
    sys.exit(main())
