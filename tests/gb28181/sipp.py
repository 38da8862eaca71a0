"""Running SIPp (Debian's sip-tester), the third-party SIP agent of the GB/T 28181 tests, for one call."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

SCENARIOS = Path(__file__).parent / "scenarios"


async def run_sipp(port: int, scenario: str, tmp_path: Path, fields: list[str], *, transport: str = "u1",
                   user: str, password: str, timeout_s: int = 15) -> int:
    """Run one SIPp call of ``scenario`` against 127.0.0.1:``port``; its exit code (0: every step as the scenario
    expects). ``fields`` is the one line of its injection file (``[field0]``...), ``user``/``password`` its digest
    credentials; SIPp's errors are printed when it fails."""
    injection = tmp_path / "device.csv"
    injection.write_text("SEQUENTIAL\n" + ";".join(fields) + ";\n")
    args = ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario), "-inf", str(injection), "-m", "1"]
    args += ["-t", transport, "-i", "127.0.0.1", "-p", "0", "-au", user, "-ap", password, "-nostdin"]
    args += ["-timeout", f"{timeout_s}s", "-timeout_error", "-trace_err"]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 2 * timeout_s)
    errors = b"".join(p.read_bytes() for p in tmp_path.glob("*_errors.log"))
    assert proc.returncode is not None
    if proc.returncode != 0:
        print(err.decode(errors="replace"), errors.decode(errors="replace"))
    return proc.returncode
