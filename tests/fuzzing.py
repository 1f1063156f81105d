"""What the fuzz tests share (issue #18): a per-example time limit, so that a hang fails the test
instead of stalling CI; the process's peak memory, so that a pixel bomb that allocates
gigabytes fails it too; and the tally of outcomes each test prints (run with -s to see it)."""

import collections
import contextlib
import resource
import signal
import sys


class Hang(Exception):
    """An example ran past its time limit (raised from the SIGALRM handler)."""


@contextlib.contextmanager
def time_limit(seconds, what):
    """Raises `Hang` naming `what` if the block runs longer than `seconds` (a SIGALRM timer:
    Unix, main thread; elsewhere the block runs unguarded). Native code that never returns to
    Python is caught when it does, which still turns an endless loop into a failure."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise Hang(f"{what} ran longer than {seconds} s")

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _status_kib(field):
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_memory():
    """The peak resident size of the process in bytes: Linux's VmHWM (which
    `reset_peak_memory` can reset), elsewhere the lifetime peak of getrusage."""
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_memory():
    """Resets the peak to the current resident size where Linux allows it (clear_refs 5), so
    that a later `peak_memory()` measures this test, not an earlier one in the same process;
    returns the peak after the reset (the baseline)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    return peak_memory()


def assert_one_line(message, *names):
    """A user-facing error: one non-empty line that names each of `names`."""
    assert message.strip(), "empty message"
    assert "\n" not in message and "\r" not in message, f"message on several lines: {message!r}"
    for name in names:
        assert name in message, f"{name!r} not named in {message!r}"


class Tally(collections.Counter):
    """Outcomes by kind, printed as one line by `report`."""

    def report(self, what):
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(self.items()))
        print(f"\n{what}: {sum(self.values())} tried ({kinds})")
