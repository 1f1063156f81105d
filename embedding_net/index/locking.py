"""One writer at a time: `exclusive_lock(path)` around load-modify-save of an index file.

Two processes enrolling images into the same index would each load it, add their images and save:
the second save would silently drop the first one's images (every write is atomic, so the file is
never torn, but an update can be lost). Writers therefore hold an exclusive lock for the whole
read-modify-write.

The lock is `fcntl.flock` on a separate file beside the index, `PATH.lock`: not on the index
itself, because each save replaces the index file (a new inode) and a lock on the old inode would
protect nothing. The kernel releases a flock when its process exits, however it exits, so a
leftover `.lock` file after a crash is harmless and never needs deleting.

flock excludes other processes only (it belongs to an open file description), so the lock is also
a per-path `threading.RLock`: other threads of this process wait too, and the thread that holds
the lock may take it again (`save_index` takes it inside a caller's `exclusive_lock`).
"""

import contextlib
import fcntl
import os
import threading
import time

from embedding_net.index.errors import IndexLockError

_GUARD = threading.Lock()
_THREAD_LOCKS = {}  # real path -> RLock
_HELD = {}  # real path -> [file descriptor, depth], for the thread that holds the RLock


def lock_path(path):
    """The lock file that guards the index at `path`."""
    return f"{path}.lock"


@contextlib.contextmanager
def exclusive_lock(path, timeout=60.0, poll=0.05):
    """Holds the writer's lock of the index at `path` for the `with` block.

    Args:
        path: the index file (it need not exist yet); the lock is `path + ".lock"`.
        timeout: seconds to wait for another writer (a thread or a process); None waits forever,
            0 tries once.
        poll: seconds between two tries on the lock file.

    Raises:
        IndexLockError: the lock was still held by another writer after `timeout` seconds.
    """
    key = os.path.realpath(path)
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    with _GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.RLock())
    if not thread_lock.acquire(timeout=-1 if deadline is None else max(0.0, timeout)):
        raise _busy(path, timeout, "another thread of this process")
    try:
        held = _HELD.get(key)
        if held is None:
            held = _HELD[key] = [_flock(path, deadline, poll, timeout), 0]
        held[1] += 1
        try:
            yield lock_path(path)
        finally:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                fcntl.flock(held[0], fcntl.LOCK_UN)
                os.close(held[0])
    finally:
        thread_lock.release()


def _flock(path, deadline, poll, timeout):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o666)
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                os.close(descriptor)
                raise _busy(path, timeout, "another process") from None
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
        except BaseException:
            os.close(descriptor)
            raise


def _busy(path, timeout, holder):
    return IndexLockError(f"index {path}: {holder} is writing it (lock {lock_path(path)}); "
                          f"gave up after {timeout:g} s: try again when it has finished")
