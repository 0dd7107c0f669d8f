"""How `python recommend.py` starts and ends: what a program needs that the tutorial does not.

recommend.py is the tutorial. Run as a program, its first lines hand over to run_program() here, before
TensorFlow is imported, so that the tutorial's own file holds no process plumbing. run_program:

    1. keeps stderr aside while TensorFlow loads, shown only if the import fails: its C++ core logs lines
       such as "Could not find cuda drivers" that TF_CPP_MIN_LOG_LEVEL does not silence
       (tensorflow/tensorflow#100442)
    2. imports recommend.py as the module `recommend`, the one beyond/ imports, and not a second copy
       named __main__, timing the import for --timings
    3. ends a Ctrl-C that comes before main() can catch it as main() ends one: one line, status 130
    4. runs main() and exits without Python's final garbage collection of TensorFlow's objects

    python recommend.py --user 42 --timings     # "import" is the time step 2 took
"""

import contextlib
import gc
import os
import sys
import tempfile
import time

# Seconds `python recommend.py` spent importing the tutorial (TensorFlow, TFDS, TFRS) before main() ran.
# It stays 0 when main() is called by a program that imported recommend itself: that run imported nothing.
import_seconds = 0.0


def run_program() -> None:
    """Imports recommend.py quietly and timed, runs its main() and exits with its status."""
    global import_seconds
    started = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and the C++ logs that do obey it: errors only
    try:
        with native_stderr_captured():
            import recommend
        import_seconds = time.perf_counter() - started
        status = recommend.main()
    except KeyboardInterrupt:
        print("recommend.py: interrupted", file=sys.stderr)
        status = 130
    # Python's exit would garbage-collect every object TensorFlow made, most of a second: skip that.
    gc.freeze()
    sys.exit(status)


@contextlib.contextmanager
def native_stderr_captured():
    """Sends what C++ code writes to stderr into a scratch file, shown only if the block fails: TensorFlow
    logs from C++ as it loads and when it first looks for a GPU (beyond/cli.py), lines that
    TF_CPP_MIN_LOG_LEVEL cannot silence."""
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        except Exception:
            os.dup2(saved_stderr, 2)
            scratch.seek(0)
            sys.stderr.write(scratch.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
