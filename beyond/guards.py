"""Guards: what turns a long or failing run into progress lines and one clear message.

The tutorial's `model.fit(...)` prints Keras's progress bar on stdout and, when something goes wrong,
a traceback. This module adds, around the core's train() and every recipe's training:

    1. the errors the command line reports, each with its exit status (see cli.main)
    2. each epoch's mean loss per rating, and how far a long epoch has got, on stderr
    3. stopping at the first step whose loss is not a finite number, and refusing a model with NaNs
    4. stopping once the loss has converged, for a recipe that asks for it (beyond/recipes.py)
    5. Ctrl-C, which stops after the current step instead of leaving TensorFlow's threads hanging
    6. folders made and removed again, for checks that must leave no trace
"""

import contextlib
import math
import os
import pathlib
import signal
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf

import recommend


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


class DataUnavailableError(Exception):
    """MovieLens could not be loaded or downloaded: reported with the ways out, exit status 1."""


class TrainingDiverged(Exception):
    """The loss or the weights stopped being finite numbers: nothing is reported, exit status 1."""


class SaveFailed(Exception):
    """Something could not be written (a full disk, say); the target is as it was. Exit status 1."""


def failure_reason(error: Exception) -> str:
    """The first line of what went wrong: the OS's words for an OSError, TensorFlow's for an OpError."""
    reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    return reason.strip().splitlines()[0] if reason.strip() else type(error).__name__


def run_training(model, data, recipe, seed: int, callbacks=()) -> int:
    """Trains MODEL the way RECIPE trains (see beyond/recipes.py), reporting its progress on stderr,
    stopping at Ctrl-C or a loss that is not a number, and refusing a model that diverged. Returns the
    number of epochs trained: fewer than the recipe's when it converged first."""
    recommend.progress(f"Training on {data.num_ratings:,} ratings: {recipe.describe(data)}")
    divergence = StopWhenDiverged()
    # EpochProgress puts each epoch's loss per rating in the logs the callbacks after it read.
    epochs = EpochProgress(data.num_ratings)
    with stop_training_on_ctrl_c(model) as ctrl_c:
        recipe.train(model, data, seed, [ctrl_c, epochs, divergence, *callbacks])
    # A model whose numbers have overflowed ranks movies by NaN: refuse it rather than report it.
    if divergence.diverged_in_epoch is not None or first_non_finite_weight(model) is not None:
        epoch = divergence.diverged_in_epoch or recipe.epochs
        raise TrainingDiverged(
            f"training diverged in epoch {epoch}: the loss is no longer a finite number. "
            f"{recipe.divergence_advice()} Nothing was recommended, evaluated or saved."
        )
    return epochs.epochs_done


class EpochProgress(tf.keras.callbacks.Callback):
    """Reports each epoch's mean loss per rating, and within a long epoch how far it has got."""

    epochs_done = 0

    def __init__(self, num_examples: int):
        super().__init__()
        self.num_examples = num_examples
        # The batch-end hook reads no logs, so Keras need not copy them out of TensorFlow at every step.
        self._supports_tf_logs = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.heartbeat = recommend.Heartbeat()

    def on_train_batch_end(self, batch, logs=None):
        self.heartbeat.beat(
            f"  epoch {self.epoch + 1}/{self.params['epochs']}: {batches_done(batch, self.params)}"
        )

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            # Stopped part way (Ctrl-C, divergence): a mean over the whole epoch would be wrong, so neither
            # this line nor the callbacks after it (TensorBoard's) report this epoch.
            logs.clear()
            return
        self.epochs_done = epoch + 1
        # Keras's "loss" is the last batch's; the mean over the epoch replaces it, for the callbacks after
        # this one (TensorBoard's) as much as for this line. Top-k metrics are 0 in training: dropped.
        mean_loss = logs.pop("summed_loss") / self.num_examples
        logs["loss"] = mean_loss
        logs.pop("total_loss", None)
        for name in [name for name in logs if name.startswith("factorized_top_k/")]:
            del logs[name]
        epochs = self.params["epochs"]
        if epochs > 20 and epoch % 10 and epoch + 1 < epochs:  # many short epochs: every tenth, and the last
            return
        elapsed = time.perf_counter() - self.heartbeat.started_at
        recommend.progress(f"  epoch {epoch + 1}/{epochs}: loss {mean_loss:.3f} per rating ({elapsed:.1f}s)")


def batches_done(batch: int, params: dict) -> str:
    steps = params.get("steps")
    return f"{batch + 1:,}{f' of {steps:,}' if steps else ''} batches"


class StopWhenConverged(tf.keras.callbacks.Callback):
    """Stops training after the first epoch that changes the loss per rating by less than SHARE of it, and
    says on stderr why training stopped, whether converged or out of epochs. It compares the size of the
    change, not its sign: the loss leaves out the L2, so a pass that lowers the whole objective can raise
    it a little."""

    def __init__(self, share: float):
        super().__init__()
        self.share = share
        self.previous = None

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training or "loss" not in logs:  # stopped part way: not an epoch's loss
            return
        loss, previous, epochs = logs["loss"], self.previous, self.params["epochs"]
        self.previous = loss
        if previous is None:
            if epoch + 1 == epochs:
                recommend.progress(
                    f"  did not converge within --epochs {epochs}: the loss, {loss:.4f} per rating, has no "
                    "earlier epoch to compare with; a larger --epochs trains until it converges"
                )
            return
        change = (loss - previous) / max(abs(previous), 1e-12)
        summary = f"the loss, {loss:.4f} per rating, changed by {change:+.3%}"
        share = f"{self.share * 100:g}%"
        if abs(change) < self.share:
            self.model.stop_training = True
            recommend.progress(
                f"  converged in epoch {epoch + 1} of at most {epochs}: {summary} (under {share})"
            )
        elif epoch + 1 == epochs:
            recommend.progress(
                f"  did not converge within --epochs {epochs}: {summary} in the last epoch (not under "
                f"{share}); a larger --epochs trains longer"
            )


class StopWhenDiverged(tf.keras.callbacks.Callback):
    """Stops training at the first step whose loss is not a finite number, and remembers the epoch.
    Keras's own TerminateOnNaN stops too, but prints its notice on stdout, which is for results."""

    diverged_in_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if not all(math.isfinite(float(logs[name])) for name in ("loss", "total_loss") if name in logs):
            self.diverged_in_epoch = self.epoch
            self.model.stop_training = True


class StopOnCtrlC(tf.keras.callbacks.Callback):
    """Keeps a Ctrl-C pressed before training began: fit() resets model.stop_training as it starts. And
    stops the model fit() is training after the step a Ctrl-C came in, when that is not the model the
    Ctrl-C stopped (the tuned recipe's solver trains the towers' tables from a model of its own)."""

    interrupted = False

    def on_train_batch_begin(self, batch, logs=None):
        if self.interrupted:
            self.model.stop_training = True

    on_train_batch_end = on_train_batch_begin


@contextlib.contextmanager
def stop_training_on_ctrl_c(model: tf.keras.Model):
    """Ctrl-C stops training after the current step, the way Keras stops itself, then interrupts the
    program: a KeyboardInterrupt raised inside a TensorFlow step can leave its input threads waiting, and
    the program with them. A second Ctrl-C stops at once. Yields the callback fit() needs."""
    ctrl_c = StopOnCtrlC()
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield ctrl_c
        return

    def interrupt(signal_number, frame):
        if ctrl_c.interrupted:
            raise KeyboardInterrupt
        ctrl_c.interrupted = model.stop_training = True

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, previous)
    if ctrl_c.interrupted:
        raise KeyboardInterrupt


def first_non_finite_weight(model: tf.keras.Model) -> str | None:
    """The name of a weight holding inf or NaN, or None when every number in the model is finite."""
    for weight in model.weights:
        if weight.dtype.is_floating and not np.isfinite(weight.numpy()).all():
            return weight.name
    return None


def make_folders(folder: pathlib.Path) -> list[pathlib.Path]:
    """Creates folder and its missing parents; returns the ones it created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for path in missing:
        path.mkdir()
    return missing


def remove_empty_folders(folders: list[pathlib.Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_folder_can_be_made_in(parent: pathlib.Path, flag: str, directory: str) -> None:
    """Makes a folder in PARENT (and PARENT, if missing) and removes what it made; a UsageError if it
    cannot. Asking os.access instead is wrong for root, read-only mounts and pseudo file systems like /proc.
    """
    try:
        created = make_folders(parent)
        try:
            os.rmdir(tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.check-", dir=parent))
        finally:
            remove_empty_folders(created)
    except OSError as error:
        where = f" (making a folder in {os.path.dirname(error.filename)} failed)" if error.filename else ""
        raise UsageError(f"{flag} {directory} cannot be created{where}: {error.strerror or error}") from None
