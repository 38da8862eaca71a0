"""The benchmark's child processes: their environment, their end when the benchmark dies, and stopping them.

Shared by the stack (:mod:`bench.stack`) and every benchmark that starts a load process of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["PROJECT_ROOT", "die_with_parent", "python_env", "stop_process"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: preexec code should do as little as possible.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def python_env(**extra: str) -> dict[str, str]:
    """Environment of a Python child of the benchmark.

    The project root goes first on PYTHONPATH so the hub and the generator run
    this checkout's code, installed or not (``fieldhub`` imports ``bench``).
    """
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGTERM to the child when the benchmark dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
