"""TensorBoard: the loss curve, held-out metrics and a map of the movie embeddings (--tensorboard DIR).

TensorBoard, TensorFlow's own viewer, shows what training did (the loss, epoch by epoch) and what it
made: its embedding projector draws the movie vectors in 2D or 3D (PCA, t-SNE or UMAP), each point
labelled and coloured from a metadata table. This module writes, for each model trained:

    1. a new run folder under DIR (named for the time, the recipe and the seed), so nothing is overwritten
    2. the loss per rating at every epoch (Keras's TensorBoard callback)
    3. with --evaluate, the held-out metrics of the model and of most-popular
    4. the movie embeddings with each title's year, genres and number of ratings, for the projector

    python recommend.py --similar-to "toy story" --tensorboard logs
    tensorboard --logdir logs
"""

import contextlib
import os
import pathlib
import re
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorboard.plugins import projector

from beyond.guards import SaveFailed, UsageError, check_folder_can_be_made_in, failure_reason

# What a folder of TensorBoard logs written by this script (or by TensorBoard's own writers) holds.
TENSORBOARD_FILE = re.compile(
    r"events\.out\.tfevents\..*|projector_config\.pbtxt|metadata\.tsv|checkpoint"
    r"|movie_embeddings-\d+\.(index|data-\d+-of-\d+)"
)


def check_tensorboard_dir(directory: str) -> None:
    """Refuses, before any training, a --tensorboard folder that holds anything but TensorBoard logs."""
    if not directory:
        raise UsageError("--tensorboard needs a folder name")
    try:
        os.fsencode(directory).decode("utf-8")
    except UnicodeDecodeError:  # TensorFlow's file writers take only UTF-8 paths
        raise UsageError(f"--tensorboard {directory!r} is not a UTF-8 path; choose another name") from None
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--tensorboard {directory} is a file, not a folder")
    for folder, _, files in os.walk(directory):
        strangers = [name for name in files if not TENSORBOARD_FILE.fullmatch(name)]
        if strangers:
            raise UsageError(
                f"--tensorboard {directory} holds files that are not TensorBoard logs "
                f"({os.path.join(folder, strangers[0])}); not touching it"
            )
    # Each run is a new folder inside it.
    check_folder_can_be_made_in(pathlib.Path(os.path.abspath(directory)), "--tensorboard", directory)


def read_movie_genres(data_dir: str | None, size: str = "100k") -> dict[bytes, list[str]]:
    """Each title's genres, by name, from the movies dataset (a title of two movie ids gets both's)."""
    builder = tfds.builder(f"movielens/{size}-movies", data_dir=data_dir)
    names = builder.info.features["movie_genres"].feature.names
    genres = {}
    for movie in tfds.as_numpy(builder.as_dataset(split="train")):
        listed = genres.setdefault(movie["movie_title"], [])
        listed += [names[label] for label in movie["movie_genres"] if names[label] not in listed]
    return genres


@contextlib.contextmanager
def log_write_failures(run: str):
    """Turns a failed write into the failure the user is told of (a full disk, say), exit status 1."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        raise SaveFailed(f"could not write the TensorBoard log in {run}: {failure_reason(error)}") from None


class TensorBoardLog:
    """One TensorBoard run folder per trained model, under the folder --tensorboard names.

    A run folder per model means nothing is ever overwritten, and TensorBoard lays the runs' loss curves
    over each other (the tutorial's recipe against --tuned, say) and lists each run's map in the projector.
    """

    def __init__(self, root: str, recipe_name: str, genres: dict[bytes, list[str]]):
        self.root = root
        self.recipe_name = recipe_name
        self.genres = genres

    def new_run(self, seed: int) -> str:
        """A run folder's name, not yet taken: when, which recipe, which seed."""
        stem = os.path.join(self.root, f"{time.strftime('%Y%m%d-%H%M%S')}-{self.recipe_name}-seed{seed}")
        run, copy = stem, 1
        while True:
            try:
                os.makedirs(run)  # made here, so a run started in the same second cannot take it too
                return run
            except FileExistsError:
                copy += 1
                run = f"{stem}-{copy}"

    def callback(self, run: str) -> tf.keras.callbacks.Callback:
        # Keras's own callback writes every value the epoch's logs hold (EpochProgress puts the loss per
        # rating there first) under run/train, one point per epoch.
        return tf.keras.callbacks.TensorBoard(log_dir=run, write_graph=False, profile_batch=0)

    def write_held_out(self, run: str, results: dict[str, dict[str, float]], epoch: int) -> None:
        """Held-out metrics of each model, as scalars at the last epoch, under run/evaluation."""
        with log_write_failures(run):
            with tf.summary.create_file_writer(os.path.join(run, "evaluation")).as_default():
                for model_name, metrics in results.items():
                    for metric, value in metrics.items():
                        tf.summary.scalar(f"{model_name}/{metric}", value, step=epoch)

    def write_projector(
        self, run: str, movie_embeddings: tf.Tensor, catalogue: np.ndarray, ratings: np.ndarray
    ) -> None:
        """The movie vectors, a metadata row per title, and the config that tells the projector of both.
        RATINGS is each catalogue title's number of ratings.

        They go beside the loss curve's events in run/train, where Keras's callback puts its own: the
        projector shows only folders that hold events, so a map in the run folder itself would not appear.
        """
        folder = os.path.join(run, "train")
        with log_write_failures(run):
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "metadata.tsv"), "w", encoding="utf-8") as metadata:
                # "first_genre" has one value per movie, so the projector can colour by it; "genres" lists all.
                metadata.write("title\tyear\tgenres\tfirst_genre\tratings\n")
                for title, rating_count in zip(catalogue, ratings):
                    text = re.sub(r"\s+", " ", title.decode("utf-8"))
                    year = re.search(r"\((\d{4})\)\s*$", text)
                    genres = self.genres.get(title) or ["(none)"]
                    metadata.write(
                        f"{text}\t{year.group(1) if year else ''}\t{'|'.join(genres)}\t{genres[0]}"
                        f"\t{rating_count}\n"
                    )
            checkpoint = tf.train.Checkpoint(movie_embeddings=tf.Variable(movie_embeddings))
            checkpoint.save(os.path.join(folder, "movie_embeddings"))
            config = projector.ProjectorConfig()
            embedding = config.embeddings.add()
            embedding.tensor_name = "movie_embeddings/.ATTRIBUTES/VARIABLE_VALUE"
            embedding.metadata_path = "metadata.tsv"
            projector.visualize_embeddings(folder, config)
