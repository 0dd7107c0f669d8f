"""--distribute: the same training under TensorFlow's own distribution strategies."""

import json
import os
import subprocess
import sys

from conftest import PLANTED_MOVIE
from test_cli import TINY_TRAINING, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two logical CPU devices stand in for two GPUs. They must be set before TensorFlow starts its runtime,
# so this runs in a fresh Python: recommend first (it picks Keras 2), then the devices, then main.
TWO_DEVICES = """
import sys
sys.path.insert(0, sys.argv[1])
import recommend
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.exit(recommend.main(sys.argv[2:]))
"""


def on_two_devices(*argv):
    return subprocess.run(
        [sys.executable, "-c", TWO_DEVICES, ROOT, *argv], capture_output=True, text=True, timeout=300
    )


def test_mirrored_training_on_two_devices_learns_the_planted_tastes(tiny_tfds):
    completed = on_two_devices(
        "--user",
        "1",
        "--k",
        "3",
        "--json",
        "--distribute",
        "mirrored",
        "--data-dir",
        tiny_tfds,
        *TINY_TRAINING
    )
    assert completed.returncode == 0, completed.stderr
    assert "MirroredStrategy on 2 replica(s): CPU:0, CPU:1" in completed.stderr
    assert json.loads(completed.stdout)["recommendations"][0]["title"] == PLANTED_MOVIE


def test_mirrored_evaluation_and_the_tuned_recipe_run_on_two_devices(tiny_tfds):
    completed = on_two_devices(
        "--evaluate",
        "--tuned",
        "--json",
        "--distribute",
        "mirrored",
        "--data-dir",
        tiny_tfds,
        "--epochs",
        "2",
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    assert results["split"] == {"train": 32, "test": 8}
    assert 0 <= results["two_tower"]["top_10"] <= 1


def test_the_default_flags_change_nothing(tiny_tfds, capsys):
    question = ["--user", "1", "--k", "5", "--json", "--data-dir", tiny_tfds, *TINY_TRAINING]
    plain = run(capsys, *question)
    explicit = run(capsys, *question, "--dataset", "100k", "--distribute", "none")
    assert plain[0] == 0 and plain[:2] == explicit[:2]


def test_an_operation_without_a_kernel_on_the_devices_gets_a_message_not_a_trace(
    tiny_tfds, capsys, monkeypatch
):
    import recommend
    import tensorflow as tf

    def no_gpu_kernel(*args, **kwargs):
        raise tf.errors.NotFoundError(
            None, None, "No registered 'ResourceSparseApplyAdagradV2' OpKernel for 'GPU' devices"
        )

    monkeypatch.setattr(recommend, "train", no_gpu_kernel)
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--distribute", "mirrored", "--data-dir", tiny_tfds
    )
    assert (status, out) == (1, "")
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "recommend.py: training with --distribute mirrored failed: an operation has no kernel on these devices"
    )
    assert "tensorflow/recommenders#138" in err and "CUDA_VISIBLE_DEVICES=" in err
