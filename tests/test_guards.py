"""When resources or numbers fail: a clear message, the right exit status, nothing half-written, and
never a traceback (divergence, memory, saving, damaged data, interrupts, the unexpected)."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import types

import pytest
import tensorflow as tf

import recommend
from beyond import alternating_least_squares, download, evaluation, guards
from conftest import SCRIPT, program_source
from test_cli import TINY_TRAINING, assert_one_line_error, run
from test_serving import snapshot


def assert_clear_failure(status, out, err, expected_status, *fragments):
    assert status == expected_status, err
    assert out == ""
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# Divergence ------------------------------------------------------------------------------------------


# Adagrad's first step moves each embedding by about the learning rate: 1e30 overflows float32 at once.
DIVERGING = ["--data-dir", "TINY", *TINY_TRAINING, "--learning-rate", "1e30"]


def diverging(tiny_tfds, *argv):
    return [*argv, *(tiny_tfds if part == "TINY" else part for part in DIVERGING)]


@pytest.mark.parametrize(
    "extra, steady",
    [
        ([], "0.5"),  # the quickstart's rate for Adagrad
        (["--json"], "0.5"),
        (["--optimizer", "adam"], "0.05"),  # Adam's steps do not shrink: a rate that suits it
        (["--tuned", "--optimizer", "adam"], "0.05"),
    ],
)
def test_a_learning_rate_far_too_large_stops_training_with_no_recommendations(
    extra, steady, tiny_tfds, capsys
):
    status, out, err = run(capsys, *diverging(tiny_tfds, "--user", "1", "--k", "3", *extra))
    assert_clear_failure(status, out, err, 1, "training diverged", "learning rate 1e+30", "--learning-rate")
    assert f"try a smaller --learning-rate, such as {steady}. Nothing was" in err.splitlines()[-1]
    # Training stopped at the first bad epoch instead of running all 30, and that epoch, cut short, is
    # not reported with a loss averaged as if it had run to the end.
    assert "epoch 30/30" not in err
    assert "nan" not in out.lower() and "loss nan" not in err


def test_a_diverged_model_is_never_saved(tiny_tfds, tmp_path, capsys):
    argv = diverging(tiny_tfds, "--user", "1", "--k", "3", "--save-dir", str(tmp_path / "model"))
    assert_clear_failure(*run(capsys, *argv), 1, "training diverged")
    assert os.listdir(tmp_path) == []


def test_a_diverged_model_is_never_evaluated(tiny_tfds, capsys, monkeypatch):
    assert_clear_failure(*run(capsys, *diverging(tiny_tfds, "--evaluate")), 1, "training diverged")


def test_weights_that_are_not_finite_count_as_divergence_even_if_the_last_loss_was_finite():
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(1)])
    assert guards.first_non_finite_weight(model) is None
    model.layers[0].kernel.assign([[float("inf")], [1.0]])
    assert guards.first_non_finite_weight(model) == model.layers[0].kernel.name


# Memory ----------------------------------------------------------------------------------------------


def test_running_out_of_memory_anyway_ends_in_a_clear_message(tiny_tfds, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[4096,1664]")

    monkeypatch.setattr(recommend, "train", out_of_memory)
    monkeypatch.setattr(alternating_least_squares, "solve_tables", out_of_memory)
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds)
    assert_clear_failure(status, out, err, 1, "ran out of memory", "--batch-size", "--embedding-dim")
    assert len(err.splitlines()) == 2  # the line that starts training, and this one
    # The solver takes no batches: only the option that acts on it is named.
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--tuned", "--data-dir", tiny_tfds)
    assert_clear_failure(status, out, err, 1, "ran out of memory", "try a smaller --embedding-dim")
    assert "--batch-size" not in err


# Saving ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/proc/recommend-model",  # a pseudo file system: nothing can be created there
        "/proc/no/such/parent/model",  # a missing parent that cannot be made
        "/sys/recommend-model",
        "/dev/null/model",  # under a device, not a folder
    ],
)
def test_a_save_dir_that_cannot_be_created_is_refused_before_training(target, tiny_tfds, capsys):
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--save-dir", target)
    assert_one_line_error(status, out, err, f"--save-dir {target} cannot be created")
    assert not os.path.exists(target)


def test_the_save_dir_check_leaves_no_trace(tiny_tfds, tmp_path, capsys, monkeypatch):
    # A refusal after the check (here: an unknown user) must not leave the folders the check tried out.
    target = tmp_path / "new" / "deeper" / "model"
    status, _, _ = run(capsys, "--user", "999", "--data-dir", tiny_tfds, "--save-dir", str(target))
    assert status == 2
    assert os.listdir(tmp_path) == []


def test_a_full_disk_during_the_save_keeps_the_previous_model(tiny_tfds, tmp_path, capsys, monkeypatch):
    target = str(tmp_path / "tiny")
    first = ["--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1", "--save-dir", target]
    assert run(capsys, *first)[0] == 0
    before = snapshot(target)

    def disk_full(module, directory, **kwargs):
        with open(os.path.join(directory, "saved_model.pb"), "wb") as file:
            file.write(b"half written")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recommend.tf.saved_model, "save", disk_full)
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1", "--save-dir", target
    )
    assert status == 1
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"recommend.py: could not save the recommender to {target}: No space left on device; "
        "the folder is as it was"
    )
    assert snapshot(target) == before
    assert sorted(os.listdir(os.path.dirname(target))) == ["tiny"]  # no staging folder left behind


# Damaged data ----------------------------------------------------------------------------------------


@pytest.fixture
def damaged_copy(tiny_tfds, tmp_path):
    """A copy of the prepared tiny dataset, and the folder of its ratings' version 0.1.1."""
    copy = tmp_path / "tfds"
    shutil.copytree(tiny_tfds, copy)
    return copy, copy / "movielens" / "100k-ratings"


def record_files(folder):
    return sorted(path for path in folder.rglob("*.tfrecord*"))


@pytest.mark.parametrize("damage", ["truncated", "missing", "garbage", "bad-metadata"])
def test_damaged_prepared_files_name_the_folder_to_delete(damage, damaged_copy, capsys):
    copy, ratings_folder = damaged_copy
    records = record_files(ratings_folder)
    assert records
    if damage == "truncated":  # a copy cut short
        content = records[0].read_bytes()
        records[0].write_bytes(content[: len(content) // 2])
    elif damage == "missing":  # a half-finished prepare, or a partial copy
        for path in records:
            path.unlink()
    elif damage == "garbage":
        records[0].write_bytes(b"\x00" * 100)
    else:
        next(ratings_folder.rglob("dataset_info.json")).write_text("{ not json")
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", str(copy), *TINY_TRAINING)
    assert_clear_failure(status, out, err, 1, f"Delete\n  {ratings_folder}\n", "run again")
    assert "{{" not in err and "[Op:" not in err  # TensorFlow's internals are not the user's business


# Interrupts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, phase",
    [
        (recommend, "read_features"),
        (download, "prepare_dataset"),
        (recommend, "train"),
        (evaluation, "held_out_metrics"),
    ],
)
def test_an_interrupt_in_any_phase_ends_with_status_130(module, phase, tiny_tfds, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, phase, interrupted)
    task = ["--evaluate"] if phase == "held_out_metrics" else ["--user", "1", "--k", "3"]
    status, out, err = run(capsys, *task, "--data-dir", tiny_tfds, "--epochs", "1")
    assert (status, out) == (130, "")
    assert err.splitlines()[-1] == "recommend.py: interrupted"


def test_ctrl_c_while_training_ends_the_program_with_status_130(tiny_tfds):
    argv = ["--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "100000", "--batch-size", "4"]
    process = subprocess.Popen(
        [sys.executable, SCRIPT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Wait until training has begun, then press Ctrl-C (SIGINT) as a user would.
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("  epoch 1/"):
            break
    process.send_signal(signal.SIGINT)
    out, rest = process.communicate(timeout=60)
    err = "".join(lines) + rest
    assert process.returncode == 130, err
    assert out == ""
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "recommend.py: interrupted"


# Everything else -------------------------------------------------------------------------------------


def test_an_unexpected_error_is_one_short_message_with_the_way_to_the_trace(tiny_tfds, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("something nobody foresaw\nwith a second line")

    monkeypatch.setattr(recommend, "build_index", broken)
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1")
    assert_clear_failure(status, out, err, 1, "ValueError: something nobody foresaw", "--debug")
    assert "second line" not in err
    # With --debug the full trace is shown: the exception is not swallowed.
    with pytest.raises(ValueError, match="nobody foresaw"):
        recommend.main(["--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1", "--debug"])


def run_program_with(change: str, *argv: str) -> subprocess.CompletedProcess:
    """Runs `python recommend.py ARGV` as a program, exactly as a user does, after CHANGE (Python source that
    may replace a function of the `recommend` or `beyond` modules, as a fault would)."""
    return subprocess.run(
        [sys.executable, "-c", program_source(change, argv)], capture_output=True, text=True, timeout=300
    )


def test_the_unexpected_error_message_in_a_real_process(tiny_tfds):
    # A fault nobody foresaw, deep in the index: the program's own last line of defence reports it.
    change = "recommend.build_index = lambda *args: {}['a key nobody foresaw']"
    completed = run_program_with(change, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1")
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    assert completed.stderr.splitlines()[-2:] == [
        "recommend.py: unexpected KeyError: 'a key nobody foresaw'",
        "  Run again with --debug to see the full trace, and please report it.",
    ]


def test_a_ctrl_c_stops_whichever_model_fit_trains_after_its_step():
    # The tuned recipe's solver is a Keras model of its own: the Ctrl-C handler stops the two towers'
    # model, and the callback stops the solver at the end of the step it came in.
    solver = types.SimpleNamespace(stop_training=False)
    ctrl_c = guards.StopOnCtrlC()
    ctrl_c.set_model(solver)
    ctrl_c.on_train_batch_end(0)
    assert not solver.stop_training
    ctrl_c.interrupted = True
    ctrl_c.on_train_batch_end(1)
    assert solver.stop_training


def test_ctrl_c_in_training_asks_keras_to_stop_then_interrupts_and_a_second_one_stops_at_once():
    class Model:
        stop_training = False

    model = Model()
    with pytest.raises(KeyboardInterrupt):
        with guards.stop_training_on_ctrl_c(model):
            os.kill(os.getpid(), signal.SIGINT)
            assert model.stop_training  # training goes on to the end of its step, unharmed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was
    with pytest.raises(KeyboardInterrupt):
        with guards.stop_training_on_ctrl_c(Model()):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second Ctrl-C must interrupt at once")


def stopping_after(losses: list[float], share: float, capsys) -> tuple[int | None, str]:
    """Feeds the epochs' losses to StopWhenConverged; the epoch it stopped after, and what it said."""
    callback = guards.StopWhenConverged(share)
    callback.set_model(types.SimpleNamespace(stop_training=False))
    callback.set_params({"epochs": len(losses)})
    for epoch, loss in enumerate(losses):
        callback.on_epoch_end(epoch, {"loss": loss})
        if callback.model.stop_training:
            return epoch + 1, capsys.readouterr().err
    return None, capsys.readouterr().err


def test_training_stops_at_the_first_epoch_that_changes_the_loss_by_under_the_share(capsys):
    # 10 -> 8 is -20%, 8 -> 7.9 is -1.25%: under 5%, so it stops after epoch 3 of 4.
    stopped, err = stopping_after([10.0, 8.0, 7.9, 7.8], 0.05, capsys)
    assert stopped == 3
    assert (
        err
        == "  converged in epoch 3 of at most 4: the loss, 7.9000 per rating, changed by -1.250% (under 5%)\n"
    )
    # A loss that rises by more than the share is not converged either (it leaves out the L2).
    assert stopping_after([10.0, 11.0, 9.0], 0.05, capsys)[0] is None


def test_running_out_of_epochs_before_converging_is_said_too(capsys):
    stopped, err = stopping_after([10.0, 8.0, 7.5], 0.05, capsys)
    assert stopped is None
    assert err == (
        "  did not converge within --epochs 3: the loss, 7.5000 per rating, changed by -6.250% in the last"
        " epoch (not under 5%); a larger --epochs trains longer\n"
    )
    # A loss of 0 (a model that fits perfectly) is no division by zero: unchanged, it has converged.
    assert stopping_after([0.0, 0.0], 0.05, capsys)[0] == 2


def test_a_small_rise_is_a_converged_loss_too(capsys):
    # 10 -> 10.01 is +0.1%: under 5% either way, so it has converged (the loss leaves out the L2).
    stopped, err = stopping_after([10.0, 10.01, 9.0], 0.05, capsys)
    assert stopped == 2
    assert "changed by +0.100% (under 5%)" in err


def test_one_epoch_says_it_could_not_tell_whether_it_converged(capsys):
    stopped, err = stopping_after([10.0], 0.05, capsys)
    assert stopped is None
    assert err == (
        "  did not converge within --epochs 1: the loss, 10.0000 per rating, has no earlier epoch to compare "
        "with; a larger --epochs trains until it converges\n"
    )


# Ctrl-C in the tuned recipe's solver: while the ratings are grouped, and in fit(). The solver converges in
# a few passes on the tiny data, so the program is run with its stopping rule off, as a fault would leave it.
NEVER_CONVERGES = "import dataclasses; from beyond import recipes; recipes.TUNED = dataclasses.replace(recipes.TUNED, converged_below=0)"
SLOW_GROUPING = (
    "import time; from beyond import alternating_least_squares as s; group = s.group_ratings; "
    "s.group_ratings = lambda *a: (print('grouping', file=sys.stderr, flush=True), time.sleep(3), group(*a))[-1]"
)


@pytest.mark.parametrize("change, ready", [(NEVER_CONVERGES, "  epoch 1/"), (SLOW_GROUPING, "grouping")])
def test_ctrl_c_in_the_solver_ends_with_status_130_and_saves_nothing(change, ready, tiny_tfds, tmp_path):
    target = tmp_path / "model"
    argv = ["--user", "1", "--k", "3", "--tuned", "--epochs", "1000000", "--data-dir", tiny_tfds]
    program = program_source(change, [*argv, "--save-dir", str(target)])
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith(ready):
            break
    process.send_signal(signal.SIGINT)
    out, rest = process.communicate(timeout=60)
    err = "".join(lines) + rest
    assert process.returncode == 130, err
    assert out == "" and "Traceback" not in err
    assert err.splitlines()[-1] == "recommend.py: interrupted"
    assert os.listdir(tmp_path) == []  # nothing saved, and no staging folder left
    # Stopped where it was: a Ctrl-C while the users' ratings were grouped leaves the movies' ungrouped.
    assert err.count("grouping") <= 1 and "ratings grouped by user and by movie" not in err
