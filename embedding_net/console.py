"""What the scripts print: TensorFlow's native start-up lines hidden, warnings as one line.

TensorFlow's C++ libraries log a few lines when they load ("oneDNN custom operations are on",
"Could not find cuda drivers", an absl notice), before `TF_CPP_MIN_LOG_LEVEL` is read and
straight to file descriptor 2, so neither that variable nor Python's logging hides them.
"""

import contextlib
import os
import sys
import warnings


@contextlib.contextmanager
def native_stderr_silenced():
    """Points file descriptor 2 at /dev/null for the block; Python's own `sys.stderr` output
    inside the block is lost too, so keep the block to imports (an exception still propagates,
    after stderr is restored)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def one_line_warnings():
    """Warnings raised in the block, printed after it as `warning: <message>`, one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)


@contextlib.contextmanager
def plain_warnings():
    """Warnings raised in the block printed at once as `warning: <message>`, one line each,
    without the library's file and line (which tell a user nothing they can act on)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr if file is None else file, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # Libraries' notices to their own callers (NumPy 2 migration, TensorFlow deprecations).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.showwarning = show
        yield


def quiet_unless(verbose, silencer):
    """`silencer()` (e.g. `native_stderr_silenced`), or nothing when `verbose` asks to see all."""
    return contextlib.nullcontext() if verbose else silencer()
