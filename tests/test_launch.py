"""`python recommend.py` as a program (beyond/launch.py): only the answer on stdout, TensorFlow's C++
start-up lines silenced, the import timed, and Ctrl-C at any moment a clean exit."""

import json
import re
import signal
import subprocess
import sys
import time

from conftest import PLANTED_MOVIE, SCRIPT
from test_cli import TINY_TRAINING


def test_the_script_run_as_a_program_prints_only_its_answer(tiny_tfds):
    """stdout carries the JSON alone, and TensorFlow's C++ start-up lines never reach stderr."""
    argv = ["--user", "1", "--k", "3", "--json", "--data-dir", tiny_tfds, *TINY_TRAINING]
    completed = subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["recommendations"][0]["title"] == PLANTED_MOVIE
    assert len(completed.stdout.splitlines()) == 1
    for noise in ("I0000", "E0000", "oneDNN", "cuda", "WARNING"):
        assert noise not in completed.stderr


def test_the_program_run_as_a_script_counts_the_time_tensorflow_takes_to_import(tiny_tfds):
    """beyond/ imports recommend.py as `recommend`: the one module beyond/launch.py imported, timing it, not a
    second copy whose clock would start after TensorFlow was already imported."""
    argv = ["--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1", "--timings"]
    completed = subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    imported = re.search(r"^timings: import (\d+\.\d)s", completed.stderr, re.M)
    assert imported and float(imported.group(1)) >= 0.5, completed.stderr


def test_ctrl_c_while_tensorflow_is_imported_ends_with_status_130_and_one_line():
    process = subprocess.Popen(
        [sys.executable, SCRIPT, "--user", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(1.0)  # Python is up; importing TensorFlow takes seconds more
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out) == (130, "")
    assert err.splitlines() == ["recommend.py: interrupted"]
