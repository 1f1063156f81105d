"""CPU noise: how much of the machine other processes used while a timing ran, so a timing
disturbed by them is marked invalid instead of reported."""

import os
import time


_HZ = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU seconds all processes have used since boot (/proc/stat: user, nice, system, irq,
    softirq, steal; not idle or iowait; guest time is already inside user)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + sum(v[5:8])
    return busy / _HZ


def own_cpu_seconds():
    """CPU seconds of this process (all its threads) and of its children it has reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def process_tree_cpu_seconds(pid):
    """utime + stime (+ reaped children) of `pid` and of every live descendant (/proc/<pid>/stat)."""
    children = {}
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        ppid = int(fields[1])
        stats[int(entry)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0)
        todo.extend(children.get(p, []))
    return total / _HZ


class NoiseMeter:
    """Average number of cores kept busy by *other* processes between `start()` and `stop()`.

    other = (machine busy CPU seconds - this process's own CPU seconds, threads and reaped
    children included) / wall seconds. ~0 on a quiet machine; 1.0 means another process held
    a whole core. A driver that waits for a subprocess sees the subprocess's CPU as its own
    once it has reaped it, so the same meter works for a worker thread pool and a driver.
    With `pid`, the CPU of that live process tree is counted as its own instead.
    """

    def __init__(self, pid=None):
        self.pid = pid

    def _own(self):
        return process_tree_cpu_seconds(self.pid) if self.pid else own_cpu_seconds()

    def start(self):
        self.t0 = (machine_busy_seconds(), self._own(), time.perf_counter())
        return self

    def stop(self):
        busy, own, wall = machine_busy_seconds(), self._own(), time.perf_counter()
        d_wall = wall - self.t0[2]
        if d_wall < 0.25:  # /proc/stat counts in 1/100 s: too coarse for a shorter window
            return None
        other = (busy - self.t0[0]) - (own - self.t0[1])
        return round(max(0.0, other) / d_wall, 4)


def validity(other_cores, threshold):
    """(valid, reason) of a timing measured while others used `other_cores` cores."""
    if other_cores is None:
        return False, "other-process CPU not measured"
    if other_cores > threshold:
        return False, (f"noisy machine: other processes used {other_cores:.3f} cores "
                       f"(> {threshold:.3f})")
    return True, ""
