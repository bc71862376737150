"""The automatic thread count: torch's default unless other processes over-fill the CPUs."""
import itertools

import pytest

from dextr_lib.utils import cpuload


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cpus`` CPUs with a 1-minute load average and, from /proc/stat, this many
    CPUs busy right now (None: no /proc/stat)."""

    def set_machine(cpus, loadavg, busy_now):
        monkeypatch.setattr(cpuload.os, "cpu_count", lambda: cpus)
        monkeypatch.setattr(cpuload.os, "getloadavg", lambda: (loadavg, loadavg, loadavg))
        monkeypatch.setattr(cpuload.time, "sleep", lambda s: None)
        if busy_now is None:
            monkeypatch.setattr(cpuload, "_cpu_times", lambda: None)
        else:  # jiffies: 100 per CPU between the two reads, busy_now CPUs' worth of them busy
            ticks = itertools.count()
            monkeypatch.setattr(cpuload, "_cpu_times", lambda: (
                lambda k: (round(busy_now * 100 * k), cpus * 100 * k))(next(ticks)))

    return set_machine


@pytest.mark.parametrize("cpus, loadavg, busy_now, expected", [
    (2, 0.0, None, 2),     # idle: torch's default
    (2, 1.9, None, 2),     # one busy process per core or less: all cores still win
    (2, 2.0, 2.0, 2),
    (2, 14.0, 14.0, 1),    # over-full: one thread
    (2, 3.0, 3.0, 1),
    (8, 12.0, 12.0, 4),    # fewer by the excess
    (2, 14.0, 0.1, 2),     # the load average still counts a job that just ended: trust now
    (2, 14.0, None, 1),    # no /proc/stat: the load average alone
])
def test_auto_thread_count(machine, cpus, loadavg, busy_now, expected):
    machine(cpus, loadavg, busy_now)
    assert cpuload.auto_thread_count(cpus) == expected


def test_no_load_average_keeps_the_default(monkeypatch):
    def no_loadavg():
        raise OSError

    monkeypatch.setattr(cpuload.os, "getloadavg", no_loadavg)
    assert cpuload.busy_cpus() is None and cpuload.auto_thread_count(3) == 3


def test_proc_stat_is_read_where_linux_has_it():
    times = cpuload._cpu_times()
    if times is None:
        pytest.skip("no /proc/stat here")
    busy, total = times
    assert 0 <= busy <= total and total > 0
