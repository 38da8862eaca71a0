"""A load child of the benchmark driven over its stdin/stdout, one JSON line each way.

The parent writes a line (a JSON configuration, or a word such as ``status`` or ``stop``) and reads the child's one-
line JSON answer. Used by the camera, viewer and terminal load processes, so each keeps only its own protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from bench.processes import die_with_parent, python_env
from bench.stack import BenchError

__all__ = ["LineChild"]


class LineChild:
    """The parent's handle on one child running ``python -m <module>``; ``what`` names it in errors."""

    module = ""
    what = "child process"
    close_timeout_s = 30.0

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(self, first_line: str, timeout_s: float, *, limit: int = 1 << 24) -> dict[str, Any]:
        """Start the child (stderr into the log) and say its first line; its answer."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, env=python_env(), limit=limit, preexec_fn=die_with_parent)
        return await self.say(first_line, timeout_s)

    async def say(self, line: str, timeout_s: float) -> dict[str, Any]:
        """One line to the child, its one-line JSON answer. Raises :class:`BenchError` on silence or exit."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError as exc:
            raise BenchError(f"{self.what} silent for {timeout_s:g} s; see {self.log_path}") from exc
        if not raw:
            raise BenchError(f"{self.what} exited; see {self.log_path}")
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def finish(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """``stop``: the child's last answer, then its exit (waited for briefly)."""
        answer = await self.say("stop", timeout_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)  # type: ignore[union-attr]
        return answer

    async def close(self) -> None:
        """After a failure: EOF makes the child end its work and exit; killed if it does not."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), self.close_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
