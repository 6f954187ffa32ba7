"""A process's resources: resident memory and CPU time (from /proc), open-file limit."""

from __future__ import annotations

import os
import resource

__all__ = ["cpu_seconds", "cpu_time", "raise_fd_limit", "read_rss"]

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


def cpu_time(pid: int) -> float:
    """CPU time process `pid` has used so far, in seconds, to the nanosecond: the sum of its
    threads' run time in /proc/PID/task/*/schedstat (the scheduler's own clock, where
    /proc/PID/stat counts 10 ms ticks); `cpu_seconds` where schedstat is missing."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        total = 0
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as stat:
                    total += int(stat.read().split()[0])
            except FileNotFoundError:
                continue  # that thread ended meanwhile
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)
    return total / 1e9


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise the soft limit on open files to `wanted`, raising the hard limit too when
    allowed (root), else as far as the hard limit goes; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass  # not allowed to raise the hard limit
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    return soft
