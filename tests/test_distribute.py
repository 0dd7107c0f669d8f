"""--distribute: the same training under TensorFlow's own distribution strategies."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import PLANTED_MOVIE
from test_cli import TINY_TRAINING, assert_one_line_error, run

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
        *TINY_TRAINING,
    )
    assert completed.returncode == 0, completed.stderr
    assert "MirroredStrategy on 2 replica(s): CPU:0, CPU:1" in completed.stderr
    assert json.loads(completed.stdout)["recommendations"][0]["title"] == PLANTED_MOVIE


def test_mirrored_evaluation_and_the_tuned_recipe_run_on_two_devices(tiny_tfds):
    # The tuned loss by Adam's gradient steps, which the replicas share; its own solver is for one device.
    completed = on_two_devices(
        "--evaluate",
        "--tuned",
        "--optimizer",
        "adam",
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
    assert results["two_tower"]["top_100"] == 1.0  # 11 titles: every held-out movie is in the top 100


def test_the_default_flags_change_nothing(tiny_tfds, capsys):
    question = ["--user", "1", "--k", "5", "--json", "--data-dir", tiny_tfds, *TINY_TRAINING]
    plain = run(capsys, *question)
    explicit = run(capsys, *question, "--dataset", "100k", "--distribute", "none")
    assert plain[0] == 0 and plain[:2] == explicit[:2]


def test_an_operation_without_a_kernel_on_the_devices_gets_a_message_not_a_trace(
    tiny_tfds, capsys, monkeypatch
):
    import tensorflow as tf

    import recommend

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_workers(*argv):
    """Runs recommend.py as two workers of one cluster on 127.0.0.1; returns [(status, stdout, stderr)]."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    environment = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    processes = []
    for index in (0, 1):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "recommend.py"), "--distribute", "multi-worker", *argv],
                env={**environment, "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        )
    outputs = [process.communicate(timeout=300) for process in processes]
    return [(process.returncode, out, err) for process, (out, err) in zip(processes, outputs)]


def test_two_workers_on_loopback_train_together_and_only_the_first_answers(tiny_tfds):
    first, second = two_workers("--user", "1", "--k", "3", "--json", "--data-dir", tiny_tfds, *TINY_TRAINING)
    assert (first[0], second[0]) == (0, 0), first[2] + second[2]
    assert "MultiWorkerMirroredStrategy on 2 replica(s) of 2 workers; this is worker 0" in first[2]
    # The same kind of answer as one process gives: the planted movie first.
    assert json.loads(first[1])["recommendations"][0]["title"] == PLANTED_MOVIE
    assert second[1:] == ("", "")  # the other worker leaves quietly


def test_two_workers_evaluate_once_not_twice(tiny_tfds):
    first, second = two_workers("--evaluate", "--json", "--data-dir", tiny_tfds, "--epochs", "3")
    assert (first[0], second[0]) == (0, 0), first[2] + second[2]
    two_tower = json.loads(first[1])["two_tower"]
    # With 11 titles every held-out movie is in the top 100, so top_100 is exactly 1, not 2.
    assert two_tower["top_100"] == 1.0
    accuracies = [two_tower[f"top_{k}"] for k in (1, 5, 10, 50, 100)]
    assert accuracies == sorted(accuracies) and all(0 <= value <= 1 for value in two_tower.values())
    assert second[1:] == ("", "")


@pytest.mark.parametrize(
    "config, fragment",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("not json", "TF_CONFIG must be JSON like"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
            "TF_CONFIG must",
        ),
    ],
)
def test_multi_worker_without_a_usable_tf_config_is_a_usage_error(config, fragment, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if config is not None:
        monkeypatch.setenv("TF_CONFIG", config)
    assert_one_line_error(*run(capsys, "--user", "1", "--distribute", "multi-worker"), fragment)
