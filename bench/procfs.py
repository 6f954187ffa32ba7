"""What /proc says about a process: resident memory and CPU time used."""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "read_rss"]

_TICKS = os.sysconf("SC_CLK_TCK")


def read_rss(pid: int) -> int:
    """Resident set size of process `pid` in bytes (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process `pid` has used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        text = stat.read()
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS
