"""The writer's lock: a second writer waits, then fails with a clear one-line error."""

import subprocess
import sys
import threading
import time

import pytest

from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.errors import IndexLockError
from embedding_net.index.locking import exclusive_lock
from embedding_net.index.files import save_index
from embedding_net.index.locking import lock_path


def test_second_thread_times_out(tmp_path):
    path = str(tmp_path / "g.enidx")
    held, release, errors = threading.Event(), threading.Event(), []

    def holder():
        with exclusive_lock(path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    started = time.monotonic()
    with pytest.raises(IndexLockError) as error:
        with exclusive_lock(path, timeout=0.3):
            errors.append("entered")
    assert 0.25 <= time.monotonic() - started < 5 and not errors
    assert str(error.value) == (f"index {path}: another thread of this process is writing it "
                                f"(lock {lock_path(path)}); gave up after 0.3 s: try again when "
                                "it has finished")
    release.set()
    thread.join()
    with exclusive_lock(path, timeout=0.3):  # released: free again
        pass


def test_second_process_times_out_then_succeeds(tmp_path):
    path = str(tmp_path / "g.enidx")
    code = ("import sys, time; from embedding_net.index import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n")
    other = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(IndexLockError, match="another process is writing it"):
            with exclusive_lock(path, timeout=0.2):
                pass
        with pytest.raises(IndexLockError):  # save_index takes the lock itself
            save_index(EmbeddingIndex(4), path, lock_timeout=0.1)
    finally:
        other.kill()
        other.wait()
    with exclusive_lock(path, timeout=5):  # the kernel released the dead process's lock
        save_index(EmbeddingIndex(4), path)  # re-entrant in the holding thread


def test_lock_released_after_an_error(tmp_path):
    path = str(tmp_path / "g.enidx")
    with pytest.raises(RuntimeError):
        with exclusive_lock(path):
            raise RuntimeError("boom")
    done = []

    def other_thread():
        with exclusive_lock(path, timeout=0.5) as held:
            done.append(held)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert done == [lock_path(path)]
