"""What scripts/bench-vs-bittorrent reads about processes: a command's time and CPU, a live process's CPU and peak RSS.

Standard library only, Linux's /proc: the same counters for mu's nodes, the
``mu`` and ``tahoe`` commands and Tahoe's nodes, so their CPU seconds compare.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
COMMAND_DEADLINE = 1800.0  # seconds; a hung command is killed and fails the benchmark instead of hanging it


@dataclass(frozen=True, slots=True)
class Finished:
    """A command run to its end: wall seconds, its own CPU seconds (wait4's rusage), exit code and output."""

    seconds: float
    cpu_seconds: float
    code: int
    stdout: str
    stderr: str


def run_timed(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Finished:
    """Run ``argv`` to its end, timing it and taking its CPU from wait4 (Popen.wait would reap it without)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Dirty pages a command before left (a Tahoe grid does not fsync its shares) are written back
        # now, not during this command's own fsyncs: each timed command starts from a clean disk.
        os.sync()
        began = time.monotonic()
        process = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env)
        killer = threading.Timer(COMMAND_DEADLINE, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        seconds = time.monotonic() - began
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Finished(seconds, usage.ru_utime + usage.ru_stime, code, out.read().decode(), err.read().decode())


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/PID/stat (fields 14 and 15, after the command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident set (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")
