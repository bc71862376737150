"""How many CPU threads suit this machine now (no torch import: the command line decides before
torch loads, so that torch starts with the right number).

torch's default uses every physical core. That is right on an idle machine, and still right when
each core already runs one other busy process (resunet101 predict on 2 cores with 2 busy loops:
2.6 s/object with 2 threads, 3.3 with 1). When other processes more than fill the cores, torch's
threads wait for each other at every layer and fewer threads are much faster (load average 14 on
2 cores: 5.2 s/object with 1 thread, 11.4 with 2). See docs/performance.md "Threads" and benchmarks/.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Tuple


def _cpu_times() -> Optional[Tuple[int, int]]:
    """``(busy, total)`` jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user .. steal (guest time is already in user)
    return total - idle, total


def busy_cpus(sample_s: float = 0.2) -> Optional[float]:
    """How many logical CPUs other processes keep busy, or None where that is unknown.

    The 1-minute load average, unless it says the CPUs are over-full: it trails by a minute, so a
    job that has just ended still counts; then a ``sample_s`` look at /proc/stat (where there is
    one) says how busy they are now, and the smaller of the two counts.
    """
    try:
        busy = os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has no load average
        return None
    cpus = os.cpu_count() or 1
    if busy > cpus:
        before = _cpu_times()
        time.sleep(sample_s)
        after = _cpu_times()
        if before is not None and after is not None and after[1] > before[1]:
            busy = min(busy, cpus * (after[0] - before[0]) / (after[1] - before[1]))
    return busy


def auto_thread_count(default: int) -> int:
    """Threads for torch: ``default`` (torch's own choice) unless other processes more than fill
    the CPUs; then fewer, by the excess, at least 1."""
    cpus = os.cpu_count() or 1
    busy = busy_cpus()
    if busy is None:
        return default
    excess = round(busy) - cpus
    return max(1, min(default, cpus - excess)) if excess > 0 else default
