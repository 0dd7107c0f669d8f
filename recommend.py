"""Recommend movies with a two-tower retrieval model: the TensorFlow Recommenders tutorial, runnable.

A retrieval model answers "which few of thousands of movies should this user see?" It learns one
embedding per user and one per movie so that a user's vector scores high (dot product) against the
movies they watched. Because the two towers never look at each other, every movie can be scored for
a user with one matrix product, which is what makes retrieval fast.

The workflow, one function per step, in the order they appear below:

    1. load_movielens       read MovieLens ratings and movie titles with TensorFlow Datasets
    2. build_vocabularies   map user ids and movie titles to embedding rows (StringLookup)
    3. build_model          the user tower, the movie tower and the retrieval task (tfrs.Model)
    4. train                fit both towers with Adagrad on in-batch softmax (--tuned: Adam, implicit ALS)
    5. build_index          score every movie for a user (BruteForce), leaving out rated movies
    6. recommend            ask the index for one user's top k

Around them, each in its own section after the six steps: similar movies and new viewers (the movie
tower alone answers "what is like this film?" and, by fitting a vector for someone the model never saw,
"what should I watch, given these films I liked?"), downloading MovieLens on its registered SHA-256
(find_or_fetch_archive), evaluate (held-out accuracy against recommending the most popular movies, with
its spread over seeds), TensorBoard (the loss curve and a map of the movie embeddings), training on
several devices or machines (tf.distribute), save_recommender / load_recommender (a SavedModel that
answers without retraining), and the command line, which turns every failure into one clear message.

Run it:

    python recommend.py --user 42                  # train, then print user 42's top 10
    python recommend.py --user 42 --k 5 --json     # the same as one JSON document
    python recommend.py --evaluate                 # is the model better than "most popular"?
    python recommend.py --evaluate --repeat 5      # ... and by more than the spread over five seeds?
    python recommend.py --liked "star wars" --liked "fargo" --tuned   # recommendations for you
    python recommend.py --similar-to "toy story" --tensorboard logs   # then: tensorboard --logdir logs
    python recommend.py --dataset 1m --user 42 --distribute mirrored    # bigger data, every local GPU
    python recommend.py --user 42 --download-url https://mirror.example/ml-100k.zip   # GroupLens down
"""

import argparse
import contextlib
import dataclasses
import difflib
import functools
import gc
import hashlib
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.parse
import warnings
from collections.abc import Callable, Iterator

# TensorFlow Recommenders is written for Keras 2. Since TensorFlow 2.16, `tf.keras` is Keras 3 unless
# this is set before TensorFlow is imported; then `tf.keras` is the tf-keras package (Keras 2).
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Hide TensorFlow's C++ INFO and WARNING lines; a user who wants them can set the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STARTED_AT = time.perf_counter()


@contextlib.contextmanager
def native_stderr_captured():
    """Sends what C++ code writes to stderr into a scratch file, and shows it only if the block fails.

    TensorFlow's C++ core logs a few lines while it loads ("oneDNN custom operations are on", "Could not
    find cuda drivers") before any log setting can reach them: TF_CPP_MIN_LOG_LEVEL does not silence
    them (tensorflow/tensorflow#100442). Only pointing file descriptor 2 elsewhere does.
    """
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


try:
    with native_stderr_captured():
        import numpy as np
        import requests
        import tensorflow as tf
        import tensorflow_datasets as tfds
        import tensorflow_recommenders as tfrs
        import tqdm
        import urllib3
        from absl import logging as absl_logging
        from tensorboard.plugins import projector
except KeyboardInterrupt:
    # Ctrl-C during the few seconds TensorFlow takes to import: end as main() ends any interrupt.
    if __name__ != "__main__":
        raise
    print("recommend.py: interrupted", file=sys.stderr)
    sys.exit(130)

IMPORTED_AT = time.perf_counter()

# The MovieLens sizes TensorFlow Datasets prepares, each as a ratings config and a movies config. 100k
# is the tutorial's; the others have the same features, so everything below works on each.
DATASET_SIZES = ("100k", "1m", "20m", "25m")
RATINGS_DATASET = "movielens/100k-ratings"
MOVIES_DATASET = "movielens/100k-movies"
# What is read of each rating. The tutorial's recipe uses only who rated which title; the tuned recipe
# also weighs each rating by its stars, so those are read too. A rating without stars (there are none in
# TFDS's MovieLens) would read as 0, which rating_weights counts as an average rating.
RATING_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "movie_title": tf.io.FixedLenFeature([], tf.string),
    "user_rating": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
}
MOVIE_FEATURES = {"movie_title": tf.io.FixedLenFeature([], tf.string)}
# Ratings are read and parsed a million at a time (about 150 MB of serialized examples), so reading
# MovieLens 25M needs no more memory than reading 1M.
READ_CHUNK_SIZE = 1_000_000
# tf.data's shuffle holds its buffer's elements, about 200 bytes each. Two million (0.4 GB) covers every
# rating of 100k and 1M, so those are shuffled whole; 20M and 25M are shuffled within a window of two
# million, which mixes them well because TFDS stores examples in a random order to begin with.
SHUFFLE_BUFFER_SIZE = 2_000_000
# A server silent for this long is not going to send 5 MB in a useful time either; TFDS alone would
# retry for minutes.
DOWNLOAD_TIMEOUT_SECONDS = 10
DOWNLOAD_CHUNK_BYTES = 1 << 16
# The tutorial's held-out evaluation: shuffle once with these seeds, train on 80%, test on 20%.
SPLIT_SEED = 42
TRAIN_FRACTION = 0.8
TOP_KS = (1, 5, 10, 50, 100)
DEFAULT_SEED = 42
RANKING_CUTOFF = 10
# Users ranked against the whole catalogue at once when evaluating: 1,024 users x 62,423 movies of
# MovieLens 25M take about 1 GB with the sort's working copies.
USERS_PER_BLOCK = 1024
# A new viewer's vector (--liked) is fitted by Newton's method, which converges in a handful of steps;
# twenty leave it unchanged to four decimals on MovieLens 100k, for two liked titles or ten.
FOLD_IN_STEPS = 20
# Long work says how far it has got at least this often, on stderr.
PROGRESS_EVERY_SECONDS = 10
SAVED_RECOMMENDER_FILE = "recommender.json"
SAVED_RECOMMENDER_FORMAT = "recommend.py saved recommender"
# What tf.saved_model.save writes, plus recommender.json: a folder with anything else is not ours.
SAVED_RECOMMENDER_CONTENTS = {
    SAVED_RECOMMENDER_FILE,
    "saved_model.pb",
    "fingerprint.pb",
    "variables",
    "assets",
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the towers are trained. The defaults are the TFRS tutorial's."""

    # 64 numbers per user and per movie: plenty to separate 1,664 movies, few enough to train in seconds.
    embedding_dim: int = 64
    # Adagrad shrinks each embedding row's steps as its squared gradients add up, so rarely seen users and
    # movies still learn quickly while popular ones settle; that is why a rate as large as 0.5 is stable.
    learning_rate: float = 0.5
    # Each rating's negatives are the other movies in its batch, so a large batch means many negatives.
    batch_size: int = 4096
    # Three passes over 100k ratings is where the tutorial stops; loss still falls slowly after that.
    epochs: int = 3
    # The tutorial feeds the ratings in the same order every epoch, so every batch repeats its negatives.
    shuffle_each_epoch: bool = False
    # L2 weight decay on both embedding tables, added to every step's loss: it keeps the towers from
    # fitting their training ratings too closely. The tutorial has none; stopping early stands in for it.
    embedding_l2: float = 0.0
    # The tutorial's loss is a softmax: each rating's movie must outscore the other movies of its batch.
    # Implicit ALS's loss asks instead that every user's score for every movie of the catalogue be near 1
    # if they rated it and near 0 if not (see implicit_als_loss). All movies are then negatives of every
    # user, so there is no sampling bias to correct, and the loss has one minimum to converge to.
    implicit_als_loss: bool = False
    # In that loss a rated movie's error counts this many times an unrated one's: a rating is a clear
    # sign of taste, while a movie not rated may only be one the user never came across.
    rated_weight: float = 6.0
    # Hu, Koren and Volinsky weigh each rating by how strong a sign it is. With this, a rating's weight
    # grows with its stars, 1 + (rated_weight - 1) x stars / average stars: rated_weight on average, 8.1
    # for 5 stars and 2.4 for 1 star on MovieLens 100k. The held-out test still counts any rating as a hit.
    weight_by_stars: bool = False
    # "adagrad" (the tutorial's) or "adam". Adam's steps do not shrink as gradients add up, so it
    # converges where Adagrad's steps have become too small to get there in a few hundred.
    optimizer: str = "adagrad"


TUTORIAL = Recipe()
# Chosen on five validation folds carved from the training data (README.md, "The tuned recipe").
TUNED = Recipe(
    implicit_als_loss=True,
    rated_weight=6.0,
    weight_by_stars=True,
    # ALS's lambda, chosen on validation: 40 gains a little NDCG for a lot of top-100, 70 loses both.
    # With one batch a pass it is added once a pass, as ALS adds it.
    embedding_l2=50.0,
    # One batch holds every rating of MovieLens 100k, so each step is a step of gradient descent on the
    # whole loss. On bigger data the batches take turns, shuffled anew every pass.
    batch_size=100_000,
    shuffle_each_epoch=True,
    optimizer="adam",
    learning_rate=0.05,
    # Validation NDCG stops rising after about 60 steps and stays level to 120.
    epochs=100,
)


# The tutorial recipe has no L2: stopping after three epochs is what keeps its vectors short. Fitting a
# new viewer (--liked) to convergence has no such stop, so this pull towards zero stands in: the L2 that
# served the softmax best on validation (README.md, "The tuned recipe", stage 6).
FOLD_IN_DEFAULT_L2 = 0.3


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


class DataUnavailableError(Exception):
    """MovieLens could not be loaded or downloaded: reported with the ways out, exit status 1."""


class TrainingDiverged(Exception):
    """The loss or the weights stopped being finite numbers: nothing is reported, exit status 1."""


class SaveFailed(Exception):
    """The recommender could not be written (a full disk, say); the target is as it was. Exit status 1."""


@dataclasses.dataclass(frozen=True)
class MovieLens:
    """MovieLens as numbers: each rating is a user's row in `users`, a title's row in `titles`, and stars.

    Each id and title is kept once. MovieLens 25M has 25 million ratings but only 162,541 users and 62,423
    titles: three 4-byte numbers a rating take 300 MB, where a Python string per id and title took 4 GB.
    """

    users: np.ndarray  # every user id that rated something, sorted (UTF-8 bytes, as TFDS stores text)
    titles: np.ndarray  # every distinct title of the movies dataset, sorted
    rating_users: np.ndarray  # int32: for each rating, its user's row in `users`
    rating_titles: np.ndarray  # int32: for each rating, its title's row in `titles`
    rating_stars: np.ndarray  # float32: each rating's stars, 1 to 5 (halves from 0.5 in 20m and 25m)
    movies: np.ndarray  # the title of every movie id, as the movies dataset lists them (1,682 ids in 100k)
    # 18 titles belong to two movie ids each. The towers know movies by title, so both ids share one
    # embedding: recommending each distinct title once keeps the list free of repeats. A title nobody
    # rated (none in 100k, thousands in 20m) keeps the random vector it started with: it is left out.
    catalogue_titles: np.ndarray  # int32: the rows of `titles` somebody rated, sorted: the catalogue
    size: str = "100k"  # which MovieLens: one of DATASET_SIZES

    @classmethod
    def from_ratings(
        cls,
        user_ids: np.ndarray,
        movie_titles: np.ndarray,
        movies: np.ndarray,
        size: str = "100k",
        stars: np.ndarray | None = None,
    ) -> "MovieLens":
        """From one user id and one title per rating (bytes), and the movies dataset's titles. Without
        STARS every rating has 5: all alike, so each weighs the recipe's rated_weight."""
        users, rating_users = np.unique(np.asarray(user_ids, dtype=object), return_inverse=True)
        seen_titles, rating_titles = np.unique(np.asarray(movie_titles, dtype=object), return_inverse=True)
        stars = np.full(len(rating_users), 5.0) if stars is None else stars
        return cls.from_numbered(users, rating_users, seen_titles, rating_titles, stars, movies, size)

    @classmethod
    def from_numbered(
        cls,
        users: np.ndarray,
        rating_users: np.ndarray,
        seen_titles: np.ndarray,
        rating_titles: np.ndarray,
        rating_stars: np.ndarray,
        movies: np.ndarray,
        size: str,
    ) -> "MovieLens":
        """From ratings numbered by rows of any list of users and of titles: re-numbers both by sorted rows."""
        user_order = np.argsort(users, kind="stable")
        user_rows = np.empty(len(users), np.int32)
        user_rows[user_order] = np.arange(len(users), dtype=np.int32)
        titles = np.unique(np.asarray(movies, dtype=object))
        title_rows = np.searchsorted(titles, seen_titles).astype(np.int32)
        unknown = [
            title for title, row in zip(seen_titles, title_rows) if row == len(titles) or titles[row] != title
        ]
        if unknown:
            raise ValueError(
                f"{len(unknown)} rated titles are not in the movies dataset, such as {unknown[0]!r}"
            )
        rating_titles = title_rows[rating_titles]
        return cls(
            users=np.asarray(users, dtype=object)[user_order],
            titles=titles,
            rating_users=user_rows[rating_users],
            rating_titles=rating_titles,
            rating_stars=np.asarray(rating_stars, np.float32),
            movies=np.asarray(movies, dtype=object),
            catalogue_titles=sorted_distinct(rating_titles).astype(np.int32),
            size=size,
        )

    @property
    def num_ratings(self) -> int:
        return len(self.rating_users)

    @property
    def user_ids(self) -> np.ndarray:
        """Who gave each rating, as text: one Python object a rating, so only for small data."""
        return self.users[self.rating_users]

    @property
    def movie_titles(self) -> np.ndarray:
        """Which title each rating is for, as text: one Python object a rating, so only for small data."""
        return self.titles[self.rating_titles]

    @functools.cached_property
    def catalogue(self) -> np.ndarray:
        """Every title somebody rated, sorted: what can be recommended."""
        return self.titles[self.catalogue_titles]

    @functools.cached_property
    def rating_catalogue_rows(self) -> np.ndarray:
        """For each rating, its title's row in the catalogue."""
        return np.searchsorted(self.catalogue_titles, self.rating_titles).astype(np.int32)

    @functools.cached_property
    def rated_by_user(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's distinct rated titles as catalogue rows: (offsets, rows), where user u's are
        rows[offsets[u]:offsets[u + 1]], sorted. A rating given twice counts once."""
        columns = len(self.catalogue_titles)
        pairs = sorted_distinct(self.rating_users.astype(np.int64) * columns + self.rating_catalogue_rows)
        offsets = np.searchsorted(pairs // columns, np.arange(len(self.users) + 1))
        return offsets, (pairs % columns).astype(np.int32)

    def ratings_per_title(self) -> np.ndarray:
        """How many ratings each catalogue title has."""
        return np.bincount(self.rating_catalogue_rows, minlength=len(self.catalogue_titles))

    def subset(self, rows: np.ndarray) -> "MovieLens":
        """Only the ratings in ROWS; the users, titles and catalogue stay those of the whole dataset."""
        return dataclasses.replace(
            self,
            rating_users=self.rating_users[rows],
            rating_titles=self.rating_titles[rows],
            rating_stars=self.rating_stars[rows],
        )


def sorted_distinct(numbers: np.ndarray) -> np.ndarray:
    """What np.unique(numbers) gives, by sorting: NumPy 2.4's np.unique took 32 s for 25 million int64
    numbers on a small machine, where sorting them takes 1.7 s."""
    numbers = np.sort(numbers)
    first = np.ones(len(numbers), bool)
    np.not_equal(numbers[1:], numbers[:-1], out=first[1:])
    return numbers[first]


# 1. Load ----------------------------------------------------------------------------------------------


def load_movielens(
    data_dir: str | None = None, download_url: str | None = None, size: str = "100k"
) -> MovieLens:
    """Reads who rated which movie with how many stars, and every movie's title, from TensorFlow Datasets.

    The ratings arrive a chunk at a time and are kept as numbers (see MovieLens), so the memory this takes
    stays bounded on 25 million ratings."""
    ratings_dataset, movies_dataset = dataset_names(size)
    users, titles = {}, {}
    rating_users, rating_titles = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)]
    rating_stars = [np.zeros(0, np.float32)]
    heartbeat, read = Heartbeat(), 0
    for chunk in read_features(ratings_dataset, RATING_FEATURES, data_dir, download_url):
        rating_users.append(numbered(chunk["user_id"], users))
        rating_titles.append(numbered(chunk["movie_title"], titles))
        rating_stars.append(chunk["user_rating"].numpy())
        read += len(rating_users[-1])
        heartbeat.beat(f"  read {read:,} ratings of {ratings_dataset}")
    movies = [
        chunk["movie_title"].numpy()
        for chunk in read_features(movies_dataset, MOVIE_FEATURES, data_dir, download_url)
    ]
    try:
        return MovieLens.from_numbered(
            np.array(list(users), dtype=object),
            np.concatenate(rating_users),
            np.array(list(titles), dtype=object),
            np.concatenate(rating_titles),
            np.concatenate(rating_stars),
            np.concatenate([np.zeros(0, dtype=object), *movies]),
            size,
        )
    except ValueError as error:  # ratings of a title the movies dataset lacks: one of them is damaged
        folder = pathlib.Path(data_dir or tfds.core.constants.get_default_data_dir()) / ratings_dataset
        raise DataUnavailableError(damaged_data_message(ratings_dataset, folder, error)) from None


def numbered(values: tf.Tensor, numbers: dict[bytes, int]) -> np.ndarray:
    """Numbers each of VALUES in the order first seen, adding the ones not yet in NUMBERS (value: number).
    Only a chunk's distinct values ever become Python objects."""
    distinct, rows = tf.unique(values)
    known = [numbers.setdefault(value, len(numbers)) for value in distinct.numpy().tolist()]
    return np.array(known, dtype=np.int32)[rows.numpy()]


def dataset_names(size: str) -> tuple[str, str]:
    """TFDS's names for one MovieLens size: its ratings and its movies."""
    return f"movielens/{size}-ratings", f"movielens/{size}-movies"


def read_features(
    name: str,
    features: dict[str, tf.io.FixedLenFeature],
    data_dir: str | None,
    download_url: str | None = None,
) -> Iterator[dict[str, tf.Tensor]]:
    """Yields a few features (name: how to parse it) of every example of a TFDS dataset, a chunk of
    examples at a time, preparing the dataset first if needed.

    This gives what `tfds.load(name, split="train")` gives, in the same order, only faster. TFDS parses
    examples one at a time, which costs about 2.5 s for the 100k ratings on a small machine: a fifth of
    this whole program. A prepared TFDS dataset is a set of TFRecord files of tf.train.Example protos,
    so read them a million at a time and parse each million in one batched call instead (0.3 s for 100k).
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # TFDS could not even read the prepared copy's description
        folder = pathlib.Path(data_dir or tfds.core.constants.get_default_data_dir()) / name
        raise DataUnavailableError(damaged_data_message(name, folder, error)) from None
    prepare_dataset(builder, download_url)
    try:
        yield from read_prepared_features(builder, features)
    except (tf.errors.OpError, OSError, ValueError) as error:
        raise DataUnavailableError(
            damaged_data_message(name, pathlib.Path(builder.data_dir).parent, error)
        ) from None


def read_prepared_features(
    builder: tfds.core.DatasetBuilder, features: dict[str, tf.io.FixedLenFeature]
) -> Iterator[dict[str, tf.Tensor]]:
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
        # Prepared in another format (ArrayRecord, say): read it the standard way, one example at a time.
        dataset = builder.as_dataset(
            split="train", decoders=tfds.decode.PartialDecoding(dict.fromkeys(features, True))
        )
        yield from dataset.batch(READ_CHUNK_SIZE)
        return
    split = builder.info.splits["train"]
    chunks = tf.data.TFRecordDataset(split.filepaths).batch(READ_CHUNK_SIZE)
    # Two chunks parsed at once keep both cores of a small machine busy, and hold about 0.5 GB.
    yield from chunks.map(lambda examples: tf.io.parse_example(examples, features), num_parallel_calls=2)


def prepare_dataset(builder: tfds.core.DatasetBuilder, download_url: str | None = None) -> None:
    """Makes sure TFDS has the dataset on disk, fetching its archive first when it is not there.

    TFDS would download the archive itself, but offline it retries for minutes, and it gives up on a
    server whose certificate has expired, as GroupLens's did in August 2026. So the archive is fetched
    here (see "Downloading MovieLens" below) into TFDS's manual-download folder, where TFDS looks first
    and checks it once more against its registered SHA-256.
    """
    if builder.is_prepared():
        return
    archive = find_or_fetch_archive(builder, download_url)
    progress(
        f"Preparing {builder.name}/{builder.builder_config.name} in {builder.data_dir_root} from {archive.name}"
    )
    try:
        # TFDS prints its "Downloading and preparing" banner on stdout, which is reserved for results.
        with contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare()
    except Exception as error:  # Whatever went wrong, the ways out are the same.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataUnavailableError(no_data_message(builder, reason)) from None


def damaged_data_message(name: str, dataset_folder: pathlib.Path, error: Exception) -> str:
    """Says which prepared dataset cannot be read, and that preparing it afresh is the way out."""
    detail = (getattr(error, "message", None) or str(error) or type(error).__name__).strip().splitlines()[0]
    # TensorFlow wraps its messages in the name of the graph function and op that failed: drop those.
    detail = re.sub(r"^\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", detail)
    return (
        f"The prepared copy of {name} cannot be read:\n"
        f"  {detail[:300]}\n"
        "Its files may be damaged, truncated or left from an interrupted prepare. Delete\n"
        f"  {dataset_folder}\n"
        "and run again: TensorFlow Datasets then prepares it afresh (from the archive in its\n"
        "downloads/manual/ folder if that is there, else downloading it)."
    )


def no_data_message(builder: tfds.core.DatasetBuilder, reason: str) -> str:
    url = builder.builder_config.download_url
    filename = builder.url_infos[url].filename
    return (
        f"MovieLens is not in {builder.data_dir_root}, and it could not be downloaded:\n"
        f"  {reason}\n"
        "Ways out:\n"
        f"  - Fetch {filename} from a mirror instead: --download-url https://<mirror>/{filename}\n"
        "    (it is accepted only if its SHA-256 is the one TensorFlow Datasets registered).\n"
        f"  - Or download {filename} yourself, from\n"
        f"      {url} or any mirror,\n"
        "    put it in\n"
        f"      {manual_download_dir(builder)}/\n"
        "    and run this again.\n"
        "  - Or point --data-dir (or the TFDS_DATA_DIR environment variable) at a TensorFlow Datasets\n"
        f"    folder that already holds {builder.name}/{builder.builder_config.name}."
    )


# 2. Vocabularies --------------------------------------------------------------------------------------


def build_vocabularies(data: MovieLens) -> tuple[tf.keras.layers.StringLookup, tf.keras.layers.StringLookup]:
    """Maps each user id and movie title to a row of its embedding table."""

    # The tutorial calls `adapt()`, which counts tokens with TensorFlow ops; fed one example at a time
    # that takes about a minute. Counting with numpy takes milliseconds and gives the same vocabulary:
    # most frequent first, ties broken by the token in descending order, exactly as `adapt()` orders it.
    def by_frequency(distinct: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return distinct[np.lexsort((distinct, counts))[::-1]]

    # `mask_token=None` leaves one extra row, index 0, for ids the vocabulary has never seen (the
    # out-of-vocabulary row): an unknown user then gets an untrained embedding instead of an error.
    user_ids_vocabulary = tf.keras.layers.StringLookup(
        mask_token=None,
        vocabulary=by_frequency(data.users, np.bincount(data.rating_users, minlength=len(data.users))),
    )
    movie_titles_vocabulary = tf.keras.layers.StringLookup(
        mask_token=None, vocabulary=by_frequency(*np.unique(data.movies, return_counts=True))
    )
    return user_ids_vocabulary, movie_titles_vocabulary


# 3. Model ---------------------------------------------------------------------------------------------


class MovieLensModel(tfrs.Model):
    """Two towers and a retrieval task: the loss rewards a user's vector for pointing at their movies."""

    def __init__(
        self,
        user_model: tf.keras.Model,
        movie_model: tf.keras.Model,
        task: tfrs.tasks.Retrieval,
        catalogue: np.ndarray | None = None,
        rated_weight: float = Recipe.rated_weight,
    ):
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        self.task = task
        # With a catalogue the model trains on implicit ALS's loss over all its titles (see
        # implicit_als_loss); without one, on the tutorial's softmax over each batch's own movies.
        self.catalogue = None if catalogue is None else tf.constant(catalogue, tf.string)
        # A rated movie's average weight in that loss (each rating brings its own while training); a new
        # viewer's liked titles, which have no stars, each get this one.
        self.rated_weight = rated_weight
        # Keras resets metrics every epoch, so this adds up one epoch's loss for the progress line.
        self.summed_loss = tf.keras.metrics.Sum(name="summed_loss")

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if training:
            if self.catalogue is not None:
                loss = implicit_als_loss(
                    self.user_model,
                    self.movie_model,
                    self.catalogue,
                    features["user_id"],
                    features["movie_title"],
                    features["user_share"],
                    features["rated_weight"],
                )
            else:
                # The task's own loss, computed the fast way: see in_batch_softmax_loss below.
                loss = in_batch_softmax_loss(
                    self.user_model, self.movie_model, features["user_id"], features["movie_title"]
                )
            self.summed_loss.update_state(loss)
            return loss
        # Evaluating: the tutorial's call. Its FactorizedTopK metric ranks each held-out rating's movie
        # among all 1,664 for that user; that costs a full catalogue product per rating, so it is computed
        # only here, never while training (where it was half of the tutorial's training time).
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        return self.task(user_embeddings, movie_embeddings)


def in_batch_softmax_loss(
    user_model: tf.keras.Model,
    movie_model: tf.keras.Model,
    user_ids: tf.Tensor,
    movie_titles: tf.Tensor,
) -> tf.Tensor:
    """The loss `tfrs.tasks.Retrieval` computes by default, summed over the batch, in a quarter of the time.

    Retrieval scores each rating's user against every rating's movie in the batch (a 4096 x 4096 matrix)
    and asks a softmax to pick the rating's own movie: loss = logsumexp over the batch's movies of
    s(user, movie) - s(user, own movie). But a batch of 4,096 ratings holds only about 1,000 distinct
    movies and 900 distinct users, and every copy of a movie scores the same against a user. So the
    logsumexp over the batch equals a logsumexp over its distinct movies m, each counted as often as it
    appears: logsumexp over m of (s(user, m) + log count(m)). It depends on the user alone, so a
    distinct-users x distinct-movies matrix holds every term. This is the same softmax, accidental hits
    included, with the same gradients reaching the same embedding rows; only the duplicated work is gone.
    """
    users, user_rows = tf.unique(user_ids)
    movies, movie_columns = tf.unique(movie_titles)
    num_movies = tf.size(movies)
    user_embeddings = user_model(users)
    movie_embeddings = movie_model(movies)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(movie_columns, tf.float32), movie_columns, num_movies)
    logits = tf.matmul(user_embeddings, movie_embeddings, transpose_b=True) + tf.math.log(counts)
    own_scores = tf.reduce_sum(
        tf.gather(user_embeddings, user_rows) * tf.gather(movie_embeddings, movie_columns), axis=1
    )
    return tf.reduce_sum(tf.gather(tf.reduce_logsumexp(logits, axis=1), user_rows) - own_scores)


def implicit_als_loss(
    user_model: tf.keras.Model,
    movie_model: tf.keras.Model,
    catalogue: tf.Tensor,
    user_ids: tf.Tensor,
    movie_titles: tf.Tensor,
    user_shares: tf.Tensor,
    rated_weights: tf.Tensor,
) -> tf.Tensor:
    """Implicit ALS's loss (Hu, Koren and Volinsky, 2008) for a batch of ratings: every score s = user .
    movie should be 1 for the movies a user rated and 0 for the rest of the catalogue, and a rated movie's
    squared error counts its rating's weight w times (see rating_weights):
        sum over rated (u, m) of w (1 - s)^2  +  sum over unrated (u, m) of s^2.

    The second sum runs over almost every user and movie pair, yet needs no pair at all. It equals the sum
    over all pairs minus the rated ones, and a user's sum of s^2 over the whole catalogue is u . (G u)
    with G = (sum over movies of e e^T), one embedding_dim x embedding_dim matrix for the whole catalogue.
    So each rating adds w (1 - s)^2 - s^2, and each user adds u . (G u) once. A batch need not
    hold all of a user's ratings: each of them adds its share of the user's term, 1 / (their number of
    ratings), so that over a pass each user's term is counted once.
    """
    users, user_rows = tf.unique(user_ids)
    user_embeddings = user_model(users)
    catalogue_embeddings = movie_model(catalogue)
    gram = tf.matmul(catalogue_embeddings, catalogue_embeddings, transpose_a=True)
    whole_catalogue = tf.reduce_sum(tf.matmul(user_embeddings, gram) * user_embeddings, axis=1)
    scores = tf.reduce_sum(tf.gather(user_embeddings, user_rows) * movie_model(movie_titles), axis=1)
    rated = rated_weights * tf.square(1.0 - scores) - tf.square(scores)
    return tf.reduce_sum(rated + user_shares * tf.gather(whole_catalogue, user_rows))


def build_model(
    user_ids_vocabulary: tf.keras.layers.StringLookup,
    movie_titles_vocabulary: tf.keras.layers.StringLookup,
    catalogue: np.ndarray,
    recipe: Recipe,
) -> MovieLensModel:
    """Builds the user and movie towers (lookup, then embedding) and joins them with a retrieval task."""
    # Under a distribution strategy (--distribute) every replica adds the L2 penalty to its own loss and
    # the replicas' gradients are summed, so each adds its share. Without one there is one replica.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    regularizer = tf.keras.regularizers.l2(recipe.embedding_l2 / replicas) if recipe.embedding_l2 else None

    def tower(vocabulary: tf.keras.layers.StringLookup) -> tf.keras.Model:
        # The explicit string Input fixes the tower's input type up front; without it tf-keras 2.21 guesses
        # wrongly when the tower is first called inside `dataset.map` ("Cast string to int64").
        return tf.keras.Sequential(
            [
                tf.keras.Input(shape=(), dtype=tf.string),
                vocabulary,
                tf.keras.layers.Embedding(
                    vocabulary.vocabulary_size(), recipe.embedding_dim, embeddings_regularizer=regularizer
                ),
            ]
        )

    user_model = tower(user_ids_vocabulary)
    movie_model = tower(movie_titles_vocabulary)
    return MovieLensModel(
        user_model,
        movie_model,
        retrieval_task(movie_model, catalogue),
        catalogue if recipe.implicit_als_loss else None,
        recipe.rated_weight,
    )


def retrieval_task(movie_model: tf.keras.Model, catalogue: np.ndarray) -> tfrs.tasks.Retrieval:
    # The metric ranks each rating's user against the whole catalogue. It is given a dataset mapped
    # through the movie tower, so it sees the tower's current embeddings whenever it is computed; one
    # batch holds the whole catalogue, so each evaluation step scores it with one matrix product.
    catalogue_embeddings = tf.data.Dataset.from_tensor_slices(catalogue).batch(2048).map(movie_model)
    return tfrs.tasks.Retrieval(
        metrics=tfrs.metrics.FactorizedTopK(candidates=catalogue_embeddings, ks=TOP_KS),
    )


# 4. Train ---------------------------------------------------------------------------------------------


def training_features(data: MovieLens, recipe: Recipe) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """What the model trains on, for a batch of rating numbers: who rated which title, as the text the
    towers take, and for implicit ALS's loss each rating's weight and its share of its user's
    whole-catalogue term: 1 / (the user's number of ratings).

    Only a batch's ratings are ever turned into text, by looking their rows up in the lists of users and
    titles: 25 million ratings as text would take gigabytes."""
    users, titles = tf.constant(data.users, tf.string), tf.constant(data.titles, tf.string)
    rating_users, rating_titles = tf.constant(data.rating_users), tf.constant(data.rating_titles)
    if recipe.implicit_als_loss:
        user_share = 1.0 / np.maximum(np.bincount(data.rating_users, minlength=len(data.users)), 1)
        user_share = tf.constant(user_share, tf.float32)
        rated_weight = tf.constant(rating_weights(data, recipe))

    def features(rows: tf.Tensor) -> dict[str, tf.Tensor]:
        user_rows, title_rows = tf.gather(rating_users, rows), tf.gather(rating_titles, rows)
        batch = {"user_id": tf.gather(users, user_rows), "movie_title": tf.gather(titles, title_rows)}
        if recipe.implicit_als_loss:
            batch["user_share"] = tf.gather(user_share, user_rows)
            batch["rated_weight"] = tf.gather(rated_weight, rows)
        return batch

    return features


def rating_weights(data: MovieLens, recipe: Recipe) -> np.ndarray:
    """Each rating's weight in implicit ALS's loss: the recipe's rated_weight, or, weighing by stars,
    1 + (rated_weight - 1) x stars / (the average stars of the ratings that have some).

    A rating whose stars are not a positive number (missing, or damaged) counts as an average one, as a
    new viewer's liked film does: weight rated_weight."""
    stars = data.rating_stars
    has_stars = np.isfinite(stars) & (stars > 0)
    if not recipe.weight_by_stars or not has_stars.any():
        return np.full(data.num_ratings, recipe.rated_weight, np.float32)
    average = np.float32(stars[has_stars].mean())
    weights = np.where(has_stars, stars, average)
    weights *= np.float32((recipe.rated_weight - 1.0) / average)
    weights += np.float32(1.0)
    return weights


def training_memory_bytes(
    num_users: int, num_movies: int, embedding_dim: int, batch_size: int, implicit_als: bool = False
) -> int:
    """A generous estimate of the memory training holds at once, in bytes (float32 numbers).

    The embedding tables (one row per user and per movie, plus each vocabulary's unknown row) come four
    times over: the weights, their gradients and the optimizer's state (Adagrad keeps one number per
    weight, Adam two). A batch adds its gathered embeddings, kept a few times for the loss and its
    gradient, and the softmax its scores, distinct users x distinct movies: never more than users x
    catalogue, however large the batch. Implicit ALS's loss has no such matrix (see implicit_als_loss).
    """
    float_bytes, copies = 4, 4
    tables = 4 * (num_users + 1 + num_movies + 1) * embedding_dim * float_bytes
    scores = (
        0 if implicit_als else copies * min(batch_size, num_users) * min(batch_size, num_movies) * float_bytes
    )
    batch_embeddings = copies * batch_size * embedding_dim * float_bytes
    return tables + scores + batch_embeddings


def available_memory_bytes() -> int | None:
    """Memory this process can still take: what the machine has available, or its container's limit if
    that is lower. None where neither can be read (then nothing is refused in advance)."""
    limits = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as meminfo:
            limits += [int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")]
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            limit_text = limit.read().strip()
            if limit_text != "max":
                # The container's usage counts its file cache too, which the kernel gives back on demand.
                with open("/sys/fs/cgroup/memory.stat") as stat:
                    cache = sum(int(line.split()[1]) for line in stat if line.startswith("inactive_file "))
                limits.append(int(limit_text) - int(used.read()) + cache)
    if not limits:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(limits) if limits else None


def check_memory(recipe: Recipe, num_users: int, num_movies: int) -> None:
    """Refuses, before any training, sizes that cannot fit in this machine's memory."""
    need = training_memory_bytes(
        num_users, num_movies, recipe.embedding_dim, recipe.batch_size, recipe.implicit_als_loss
    )
    available = available_memory_bytes()
    if available is not None and need > available:
        raise UsageError(
            f"--embedding-dim {recipe.embedding_dim} and --batch-size {recipe.batch_size} need about "
            f"{need / 2**30:.1f} GiB of memory to train, more than the {available / 2**30:.1f} GiB available "
            "here; choose smaller sizes"
        )


class EpochProgress(tf.keras.callbacks.Callback):
    """Reports each epoch's mean loss per rating on stderr, so stdout stays clean for the results, and
    within a long epoch (thousands of batches on MovieLens 25M) how far it has got, every few seconds."""

    def __init__(self, num_examples: int):
        super().__init__()
        self.num_examples = num_examples
        # The batch-end hook reads no logs, so Keras need not copy them out of TensorFlow at every step.
        self._supports_tf_logs = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.heartbeat = Heartbeat()

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
        mean_loss = logs.pop("summed_loss") / self.num_examples
        # Keras's "loss" is the last batch's; the mean over the epoch replaces it, for the callbacks that
        # come after this one (TensorBoard's) as much as for this line. The last batch's total goes too.
        logs["loss"] = mean_loss
        logs.pop("total_loss", None)
        # The top-k metrics are computed only when evaluating (see compute_loss): in training they are 0.
        for name in [name for name in logs if name.startswith("factorized_top_k/")]:
            del logs[name]
        epochs = self.params["epochs"]
        # A run of many short epochs (the tuned recipe's 100) reports every tenth, and the last.
        if epochs > 20 and epoch % 10 and epoch + 1 < epochs:
            return
        elapsed = time.perf_counter() - self.heartbeat.started_at
        progress(f"  epoch {epoch + 1}/{epochs}: loss {mean_loss:.3f} per rating ({elapsed:.1f}s)")


class Heartbeat:
    """Says how far long work has got on stderr: at most every PROGRESS_EVERY_SECONDS, with the time since
    it began. Work that ends sooner says nothing."""

    def __init__(self):
        self.started_at = self.reported_at = time.perf_counter()

    def beat(self, message: str) -> None:
        now = time.perf_counter()
        if now - self.reported_at >= PROGRESS_EVERY_SECONDS:
            self.reported_at = now
            progress(f"{message} ({now - self.started_at:.0f}s)")


def batches_done(batch: int, params: dict) -> str:
    steps = params.get("steps")
    return f"{batch + 1:,}{f' of {steps:,}' if steps else ''} batches"


class StopWhenDiverged(tf.keras.callbacks.Callback):
    """Stops training at the first step whose loss is not a finite number, and remembers the epoch.

    Keras's own TerminateOnNaN does the stopping too, but prints its notice on stdout, which is for results.
    """

    diverged_in_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if not all(math.isfinite(float(logs[name])) for name in ("loss", "total_loss") if name in logs):
            self.diverged_in_epoch = self.epoch
            self.model.stop_training = True


class StopOnCtrlC(tf.keras.callbacks.Callback):
    """Keeps a Ctrl-C pressed before training began: fit() resets model.stop_training as it starts."""

    interrupted = False

    def on_train_batch_begin(self, batch, logs=None):
        if self.interrupted:
            self.model.stop_training = True


@contextlib.contextmanager
def stop_training_on_ctrl_c(model: tf.keras.Model):
    """Ctrl-C stops training after the current step, the way Keras stops itself (model.stop_training),
    and then interrupts the program. A KeyboardInterrupt raised in the middle of a TensorFlow step can
    leave its input pipeline's threads waiting, and the program with them. A second Ctrl-C stops at once.
    Yields the callback that fit() needs for a Ctrl-C pressed before its first step."""
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


def train(
    model: MovieLensModel,
    data: MovieLens,
    recipe: Recipe,
    seed: int,
    callbacks: tuple[tf.keras.callbacks.Callback, ...] = (),
) -> None:
    """Fits both towers with the recipe's optimizer and loss. CALLBACKS are extra Keras callbacks (TensorBoard's)."""
    num_examples = data.num_ratings
    optimizers = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam}
    loss = ""
    if recipe.implicit_als_loss:
        loss = f", implicit ALS's loss over all {len(data.catalogue):,} titles"
        loss += ", each rating weighted by its stars" if recipe.weight_by_stars else ""
    one_batch = num_examples <= recipe.batch_size
    progress(
        f"Training on {num_examples:,} ratings: {recipe.epochs} epoch{'s' if recipe.epochs > 1 else ''}, "
        f"batches of {recipe.batch_size:,}, "
        f"{recipe.optimizer.capitalize()} {recipe.learning_rate:g}{loss}"
    )
    # The dataset holds rating numbers; each batch of them becomes the towers' text in training_features.
    # Shuffling numbers gives the same order as shuffling the ratings themselves: a seeded shuffle's order
    # depends only on the seed, the buffer and the count. A single batch is the same batch in any order.
    ratings = tf.data.Dataset.range(num_examples)
    if recipe.shuffle_each_epoch and not one_batch:
        ratings = ratings.shuffle(
            min(num_examples, SHUFFLE_BUFFER_SIZE), seed=seed, reshuffle_each_iteration=True
        )
    batches = ratings.batch(recipe.batch_size).map(training_features(data, recipe))
    if one_batch:
        # One batch, the same every pass (the tuned recipe's on 100k): made once, not once a pass.
        batches = batches.cache()
    model.compile(optimizer=optimizers[recipe.optimizer](learning_rate=recipe.learning_rate))
    divergence = StopWhenDiverged()
    with stop_training_on_ctrl_c(model) as ctrl_c:
        model.fit(
            batches.prefetch(tf.data.AUTOTUNE),
            epochs=recipe.epochs,
            verbose=0,
            callbacks=[ctrl_c, EpochProgress(num_examples), divergence, *callbacks],
        )
    # A model whose numbers have overflowed ranks movies by NaN: refuse it rather than report it.
    if divergence.diverged_in_epoch is not None or first_non_finite_weight(model) is not None:
        epoch = divergence.diverged_in_epoch or recipe.epochs
        raise TrainingDiverged(
            f"training diverged in epoch {epoch}: the loss is no longer a finite number. The likely cause is "
            f"the learning rate {recipe.learning_rate:g}, too large for these settings; try a smaller "
            f"--learning-rate, such as {min(recipe.learning_rate / 10, TUTORIAL.learning_rate):g}. Nothing was "
            "recommended, evaluated or saved."
        )


# 5. Index ---------------------------------------------------------------------------------------------


class Recommender(tf.Module):
    """A BruteForce index over every movie, plus who rated what so it can leave rated movies out.

    This is what the command line queries after training, and what --save-dir writes as a SavedModel.
    A saved BruteForce answers only the k it was traced with (tensorflow/recommenders#298), so this one
    ranks the whole catalogue once and cuts it to any k afterwards. It also keeps the movie embeddings
    and their titles, for the two questions of "Similar movies and new viewers" below.
    """

    def __init__(
        self,
        index: tfrs.layers.factorized_top_k.BruteForce,
        users: np.ndarray,
        rated_by_user: tuple[np.ndarray, np.ndarray],
        catalogue: np.ndarray,
        movie_embeddings: tf.Tensor,
        fold_in_l2: float,
        fold_in_rated_weight: float = 0.0,
    ):
        super().__init__()
        self.index = index
        self.catalogue_size = len(catalogue)
        # Who rated what, to leave it out: each user's row, then that row's rated catalogue rows, all users'
        # one after another with their offsets (see MovieLens.rated_by_user). That is 4 bytes a rating,
        # where a hash table of "user<TAB>title" strings took 2.5 GB for MovieLens 25M. A user the data
        # lacks gets the extra, empty row at the end.
        self.user_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(users, tf.range(len(users), dtype=tf.int64)),
            default_value=len(users),
        )
        offsets, rated_rows = rated_by_user
        self.rated_offsets = tf.Variable(
            np.append(offsets, offsets[-1]), trainable=False, name="rated_offsets"
        )
        self.rated_rows = tf.Variable(rated_rows, trainable=False, name="rated_rows")
        self.titles = tf.Variable(catalogue, trainable=False, name="titles")
        self.movie_embeddings = tf.Variable(movie_embeddings, trainable=False, name="movie_embeddings")
        self.title_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(catalogue, tf.range(len(catalogue), dtype=tf.int64)),
            default_value=-1,
        )
        self.fold_in_l2 = tf.Variable(fold_in_l2, trainable=False, dtype=tf.float32, name="fold_in_l2")
        # Above 0, the towers were trained on implicit ALS's loss with this weight, and a new viewer is
        # fitted to that loss (least_squares_viewer); at 0, to the softmax (fold_in_viewer).
        self.fold_in_rated_weight = tf.Variable(
            fold_in_rated_weight, trainable=False, dtype=tf.float32, name="fold_in_rated_weight"
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_ids"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([], tf.bool, name="include_rated"),
        ]
    )
    def recommend(self, user_ids, k, include_rated):
        """Returns {"titles", "scores"}: each user's k best-scored movies, best first."""
        scores, titles = self.index(user_ids, k=self.catalogue_size)
        rated = tf.RaggedTensor.from_row_splits(self.rated_rows, self.rated_offsets, validate=False)
        rated = tf.gather(rated, self.user_rows.lookup(user_ids))
        rated_matrix = tf.scatter_nd(
            tf.stack([rated.value_rowids(), tf.cast(rated.flat_values, tf.int64)], axis=1),
            tf.ones_like(rated.flat_values),
            tf.stack([tf.size(user_ids, out_type=tf.int64), self.catalogue_size]),
        )
        was_rated = tf.gather(rated_matrix, self.title_rows.lookup(titles), batch_dims=1) > 0
        excluded = tf.logical_and(was_rated, tf.logical_not(include_rated))
        # Excluded titles sink to the bottom; top_k keeps the others in the index's order (on equal
        # scores it keeps the earlier one first), so k can be anything up to the movies left.
        _, kept = tf.math.top_k(tf.where(excluded, -np.inf, scores), k=k)
        return {
            "titles": tf.gather(titles, kept, batch_dims=1),
            "scores": tf.gather(scores, kept, batch_dims=1),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="titles"),
            tf.TensorSpec([], tf.int32, name="k"),
        ]
    )
    def similar_movies(self, titles, k):
        """Returns {"titles", "scores"}: for each title, the k others nearest to it (see nearest_movies)."""
        with tf.control_dependencies([self.at_most_the_catalogue(k)]):
            return nearest_movies(self.movie_embeddings, self.titles, self.rows_of(titles), k)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="titles"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([], tf.bool, name="include_rated"),
        ]
    )
    def recommend_for_liked(self, titles, k, include_rated):
        """Returns {"titles", "scores"}: the k best movies for a new viewer who liked these titles."""
        tf.debugging.assert_positive(tf.size(titles), message="name at least one liked title")
        rows = self.rows_of(titles)
        viewer = tf.cond(
            self.fold_in_rated_weight > 0,
            lambda: least_squares_viewer(
                self.movie_embeddings, rows, self.fold_in_l2, self.fold_in_rated_weight
            ),
            lambda: fold_in_viewer(self.movie_embeddings, rows, self.fold_in_l2),
        )
        scores = tf.linalg.matvec(self.movie_embeddings, viewer)
        liked = tf.scatter_nd(rows[:, tf.newaxis], tf.ones_like(rows, tf.bool), [self.catalogue_size])
        scores = tf.where(liked & tf.logical_not(include_rated), -np.inf, scores)
        with tf.control_dependencies([self.at_most_the_catalogue(k)]):
            scores, kept = tf.math.top_k(scores, k=k)
        return {"titles": tf.gather(self.titles, kept), "scores": scores}

    def at_most_the_catalogue(self, k):
        return tf.debugging.assert_less_equal(
            k, self.catalogue_size, message="k is more than the movies in the catalogue"
        )

    def rows_of(self, titles):
        rows = self.title_rows.lookup(titles)
        # A plain TensorFlow program calling the SavedModel gets this message, not a silent wrong answer.
        # The dependency makes the check run before any use of the rows, not alongside it.
        known = tf.debugging.assert_non_negative(
            rows, message="a title is not in the catalogue (titles are exact)"
        )
        with tf.control_dependencies([known]):
            return tf.identity(rows)


def build_index(
    model: MovieLensModel, data: MovieLens, fold_in_l2: float = FOLD_IN_DEFAULT_L2
) -> Recommender:
    """Embeds every movie once and indexes the embeddings for exact (brute-force) top-k search.

    fold_in_l2 is how strongly a new viewer's vector is held to zero. A new viewer is fitted to the loss
    the model was trained on: implicit ALS's (least_squares_viewer) or the softmax (fold_in_viewer)."""
    catalogue = data.catalogue
    index = tfrs.layers.factorized_top_k.BruteForce(model.user_model)
    # The catalogue is sorted by title, and top-k keeps the earlier of two equal scores, so ties always
    # resolve alphabetically.
    movie_embeddings = model.movie_model(catalogue)
    index.index(candidates=movie_embeddings, identifiers=tf.constant(catalogue))
    fold_in_rated_weight = model.rated_weight if model.catalogue is not None else 0.0
    return Recommender(
        index, data.users, data.rated_by_user, catalogue, movie_embeddings, fold_in_l2, fold_in_rated_weight
    )


def rated_titles_per_user(data: MovieLens) -> dict[str, int]:
    """How many distinct titles each user has rated, by user id."""
    offsets, _ = data.rated_by_user
    return {user.decode(): int(count) for user, count in zip(data.users, np.diff(offsets))}


# 6. Recommend -----------------------------------------------------------------------------------------


def recommend(recommender: Recommender, user_id: str, k: int, include_rated: bool) -> list[dict]:
    """Asks for one user's top k, from a Recommender just trained or one loaded from disk."""
    result = recommender.recommend(
        user_ids=tf.constant([user_id]), k=tf.constant(k, tf.int32), include_rated=tf.constant(include_rated)
    )
    return ranking(result["titles"][0].numpy(), result["scores"][0].numpy())


def ranking(titles: np.ndarray, scores: np.ndarray) -> list[dict]:
    return [
        {"rank": rank, "title": title.decode("utf-8"), "score": round(float(score), 4)}
        for rank, (title, score) in enumerate(zip(titles, scores), start=1)
    ]


# Similar movies and new viewers ----------------------------------------------------------------------

# The tutorial asks one question of the trained towers: which movies for this user? The movie tower
# answers two more on its own. Which movies are like this one? And which movies for someone the model has
# never seen, who names a few films they liked?


def match_title(text: str, titles: list[str]) -> str:
    """The one catalogue title TEXT names: the exact title, or a part of exactly one, compared without
    regard to case or accents ("miserables" names "Misérables, Les (1995)")."""
    if text in titles:
        return text
    wanted = folded(text.strip())
    if not wanted:
        raise UsageError("an empty title names no movie")
    # "fear (1996)" is all of one title and part of another ("Primal Fear (1996)"): the whole one wins.
    whole = [title for title in titles if folded(title) == wanted]
    if len(whole) == 1:
        return whole[0]
    found = [title for title in titles if wanted in folded(title)]
    if len(found) == 1:
        return found[0]
    if found:
        shown = ", ".join(repr(title) for title in found[:5]) + (", ..." if len(found) > 5 else "")
        raise UsageError(f"{text!r} is part of {len(found)} titles: {shown}; give more of the title")
    # No title contains it: suggest the titles that look most like it, compared without their years.
    without_year = {folded(re.sub(r"\s*\(\d{4}\)$", "", title)): title for title in reversed(titles)}
    close = difflib.get_close_matches(wanted, without_year, n=5, cutoff=0.6)
    hint = "; close titles: " + ", ".join(repr(without_year[key]) for key in close) if close else ""
    raise UsageError(f"no movie title matches {text!r}{hint}")


def folded(text: str) -> str:
    """TEXT in lower case without accents, for matching what people type against titles."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(character for character in decomposed if not unicodedata.combining(character)).casefold()


def nearest_movies(movie_embeddings: tf.Tensor, titles: tf.Tensor, rows: tf.Tensor, k: tf.Tensor) -> dict:
    """For each movie row, the k other movies whose embeddings point most nearly the same way.

    Closeness is the cosine of the angle between two movie vectors, not their dot product. The length of a
    movie's vector mostly says how often it is watched: the softmax gives popular movies long vectors so
    that they score high for everyone. By dot product the nearest movies to almost anything would be the
    same few hits; the direction says who watches a movie, which is what "similar" means here.
    """
    directions = tf.math.l2_normalize(movie_embeddings, axis=1)
    cosines = tf.matmul(tf.gather(directions, rows), directions, transpose_b=True)
    itself = tf.one_hot(rows, tf.shape(movie_embeddings)[0], on_value=True, off_value=False)
    scores, kept = tf.math.top_k(tf.where(itself, -np.inf, cosines), k=k)
    return {"titles": tf.gather(titles, kept), "scores": scores}


def fold_in_viewer(movie_embeddings: tf.Tensor, liked_rows: tf.Tensor, l2: tf.Tensor) -> tf.Tensor:
    """A user vector for someone who liked the movies at liked_rows, with the movie tower held fixed.

    It is the vector that training would have given this viewer: the one under which their liked movies
    win the model's own softmax over the whole catalogue, with the recipe's pull towards zero,
        minimise  sum over liked m of [logsumexp over all movies j of (v . e_j) - v . e_m]  +  l2 |v|^2.
    Averaging the liked movies' vectors is the obvious shortcut, but it keeps whatever those movies share
    with everything else (above all, being popular) and so drifts towards the hits. The softmax's gradient
    is (expected movie under the current scores) - (liked movies): the fitted vector is pushed exactly
    towards what sets the liked movies apart from the rest of the catalogue.

    The problem is small and smooth (one vector of embedding_dim numbers), so each step solves with the
    full Hessian; the damping, 1 / (1 + Newton decrement), keeps the first steps from overshooting.
    """
    liked = tf.gather(movie_embeddings, liked_rows)
    count = tf.cast(tf.size(liked_rows), tf.float32)
    dimension = tf.shape(movie_embeddings)[1]
    viewer = tf.zeros([dimension])
    for _ in tf.range(FOLD_IN_STEPS):
        probabilities = tf.nn.softmax(tf.linalg.matvec(movie_embeddings, viewer))
        expected = tf.linalg.matvec(movie_embeddings, probabilities, transpose_a=True)
        gradient = count * expected - tf.reduce_sum(liked, axis=0) + 2.0 * l2 * viewer
        covariance = tf.matmul(
            movie_embeddings * probabilities[:, tf.newaxis], movie_embeddings, transpose_a=True
        )
        covariance -= expected[:, tf.newaxis] * expected[tf.newaxis, :]
        hessian = count * covariance + 2.0 * l2 * tf.eye(dimension)
        step = tf.linalg.solve(hessian, gradient[:, tf.newaxis])[:, 0]
        decrement = tf.sqrt(tf.maximum(tf.tensordot(gradient, step, axes=1), 0.0))
        viewer -= step / (1.0 + decrement)
    return viewer


def least_squares_viewer(
    movie_embeddings: tf.Tensor, liked_rows: tf.Tensor, l2: tf.Tensor, rated_weight: tf.Tensor
) -> tf.Tensor:
    """A new viewer's vector under implicit ALS's loss (see implicit_als_loss), the movie tower held fixed:
        minimise  sum over liked m of rated_weight (1 - v . e_m)^2 + sum over the rest of (v . e_j)^2 + l2 |v|^2.
    It is a least-squares problem, solved exactly as ALS solves each user: with G the sum of e e^T over the
    catalogue and L the same over the liked movies only,
        v = (G + (rated_weight - 1) L + l2 I)^-1  rated_weight (sum of the liked movies' vectors).
    """
    liked = tf.gather(movie_embeddings, liked_rows)
    dimension = tf.shape(movie_embeddings)[1]
    system = (
        tf.matmul(movie_embeddings, movie_embeddings, transpose_a=True)
        + (rated_weight - 1.0) * tf.matmul(liked, liked, transpose_a=True)
        + l2 * tf.eye(dimension)
    )
    return tf.linalg.solve(system, rated_weight * tf.reduce_sum(liked, axis=0)[:, tf.newaxis])[:, 0]


def fold_in_l2_for(recipe: Recipe) -> float:
    """How strongly a new viewer's vector is pulled towards zero: the recipe's L2 on each embedding row.

    Training applies that L2 at every step: with the softmax recipes' batches, about 25 times an epoch,
    against each of a user's ratings once an epoch. (The tuned recipe's one batch a pass applies it once,
    as ALS does.) Counted that way, a viewer who names three films would be held to a vector so short
    that the catalogue's hits came first whatever they named, as for a user who had watched only those
    three. But three films named are a sample of someone's taste, not all they have ever seen, so the
    coefficient is applied once.
    """
    return recipe.embedding_l2 or FOLD_IN_DEFAULT_L2


def catalogue_titles(recommender) -> list[str]:
    """The titles a Recommender (trained or loaded) can answer about, as text."""
    return [title.decode("utf-8") for title in recommender.titles.numpy()]


def similar_movies(recommender, title: str, k: int) -> list[dict]:
    result = recommender.similar_movies(titles=tf.constant([title]), k=tf.constant(k, tf.int32))
    return ranking(result["titles"][0].numpy(), result["scores"][0].numpy())


def recommend_for_liked(recommender, titles: list[str], k: int, include_rated: bool) -> list[dict]:
    result = recommender.recommend_for_liked(
        titles=tf.constant(titles), k=tf.constant(k, tf.int32), include_rated=tf.constant(include_rated)
    )
    return ranking(result["titles"].numpy(), result["scores"].numpy())


# Downloading MovieLens --------------------------------------------------------------------------------
#
# TensorFlow Datasets registers the SHA-256 of every MovieLens archive (its url_checksums/movielens.txt).
# Bytes with that digest are the right bytes whoever served them, so a server whose certificate fails
# verification (GroupLens's expired on 2026-08-28) or a mirror is safe to use: the digest is checked
# before the archive is put where TFDS reads it, and bytes that do not match are deleted.


class DownloadFailed(Exception):
    """The archive could not be had; the message says why, in one line."""


def manual_download_dir(builder: tfds.core.DatasetBuilder) -> pathlib.Path:
    return pathlib.Path(builder.data_dir_root) / "downloads" / "manual"


def find_or_fetch_archive(builder: tfds.core.DatasetBuilder, download_url: str | None) -> pathlib.Path:
    """Returns the dataset's archive in TFDS's manual-download folder, verified, getting it if need be:
    from a download TFDS made earlier, else from download_url, else from the URL TFDS knows."""
    expected = builder.url_infos[builder.builder_config.download_url]
    archive = manual_download_dir(builder) / expected.filename
    url = download_url or builder.builder_config.download_url
    created = []
    try:
        if archive.exists():
            received = sha256_of(archive)
            if received != expected.checksum:
                raise DownloadFailed(
                    f"{archive} is not the registered {expected.filename}: its SHA-256 is {received}, "
                    f"expected {expected.checksum}. Delete or replace it."
                )
            return archive
        created = make_folders(archive.parent)
        earlier = find_earlier_download(pathlib.Path(builder.data_dir_root) / "downloads", expected)
        if earlier is not None:
            progress(f"Using the {expected.filename} that TensorFlow Datasets downloaded earlier: {earlier}")
            save_verified(file_chunks(earlier), archive, expected, source=str(earlier))
        else:
            save_verified(download_chunks(url, expected), archive, expected, source=url)
    except (DownloadFailed, requests.RequestException, OSError) as error:
        remove_empty_folders(created)
        if isinstance(error, requests.RequestException):
            reason = describe_download_failure(url, error)
        elif isinstance(error, OSError):
            where = error.filename or archive.parent
            reason = f"could not read or write {where}: {error.strerror or error}"
        else:
            reason = str(error)
        raise DataUnavailableError(no_data_message(builder, reason)) from None
    except BaseException:
        remove_empty_folders(created)
        raise
    return archive


def save_verified(chunks, archive: pathlib.Path, expected, source: str) -> None:
    """Writes the chunks beside archive and renames them into place only if their SHA-256 is the registered
    one. Whatever happens, no partial file is left behind."""
    digest = hashlib.sha256()
    size = 0
    partial = archive.with_name(f".{archive.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                if size > int(expected.size):  # a wrong file, or an endless stream: stop filling the disk
                    break
                file.write(chunk)
        if digest.hexdigest() != expected.checksum:
            raise DownloadFailed(
                f"{source} sent {'more than ' if size > int(expected.size) else ''}{size:,} bytes with "
                f"SHA-256 {digest.hexdigest()}, but {expected.filename} "
                f"is registered as {int(expected.size):,} bytes with SHA-256 {expected.checksum}; refused and deleted"
            )
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)


def download_chunks(url: str, expected):
    """Yields the bytes at url with a progress bar on stderr. A certificate that fails verification is
    accepted, with a note, because save_verified checks the bytes themselves."""
    try:
        response = http_get(url, verify=True)
    except requests.exceptions.SSLError as error:
        problem = certificate_problem(error)
        if problem is None:
            raise
        host = urllib.parse.urlsplit(url).hostname
        progress(
            f"certificate of {host} {problem}; accepting {expected.filename} on its registered SHA-256 instead"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = http_get(url, verify=False)
    bar = tqdm.tqdm(
        total=int(expected.size),  # TFDS's Size type does not add to floats, as tqdm needs
        desc=f"Downloading {expected.filename}",
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        # A bar that redraws is for a terminal; in a log file, a line every few seconds is enough.
        mininterval=0.2 if sys.stderr.isatty() else 5,
    )
    with response, bar:
        for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
            bar.update(len(chunk))
            yield chunk


def http_get(url: str, verify: bool) -> requests.Response:
    # TFDS downloads with `requests` too, so this sees the same proxies (HTTPS_PROXY, NO_PROXY) and
    # certificate settings (REQUESTS_CA_BUNDLE). The timeout bounds each wait, not the whole download.
    response = requests.get(url, stream=True, verify=verify, timeout=DOWNLOAD_TIMEOUT_SECONDS)
    try:
        response.raise_for_status()
    except requests.HTTPError:
        response.close()
        raise
    return response


def certificate_problem(error: requests.exceptions.SSLError) -> str | None:
    """What is wrong with the server's certificate, or None if the TLS error is something else."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" not in text:
        return None
    for marker, problem in (
        ("expired", "has expired"),
        ("not yet valid", "is not valid yet"),
        ("self-signed", "is self-signed"),
        ("self signed", "is self-signed"),
        ("Hostname mismatch", "is for another host"),
        ("local issuer", "is not from an authority this machine trusts"),
    ):
        if marker in text:
            return problem
    return "could not be verified"


def describe_download_failure(url: str, error: requests.RequestException) -> str:
    if isinstance(error, requests.exceptions.ProxyError):
        return f"{url}: could not connect to the proxy (HTTPS_PROXY)"
    if isinstance(error, requests.exceptions.SSLError):
        return f"{url}: TLS error ({str(error)[-160:]})"
    if isinstance(error, requests.exceptions.Timeout):
        return f"{url}: no answer within {DOWNLOAD_TIMEOUT_SECONDS} s"
    if isinstance(
        error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)
    ):
        return f"{url}: the transfer broke off before the end"
    if isinstance(error, requests.exceptions.ConnectionError) and "Read timed out" in str(error):
        return f"{url}: the server stopped sending for {DOWNLOAD_TIMEOUT_SECONDS} s in the middle of the transfer"
    if isinstance(error, requests.exceptions.ConnectionError):
        return f"{url}: could not connect (is this machine offline?)"
    if isinstance(error, requests.exceptions.HTTPError):
        return f"{url}: the server answered {error.response.status_code} {error.response.reason}"
    return f"{url}: {str(error)[:200]}"


def find_earlier_download(downloads: pathlib.Path, expected) -> pathlib.Path | None:
    """A complete copy of the archive that TFDS downloaded before a failed prepare, if there is one."""
    for folder, subfolders, files in os.walk(downloads):
        subfolders[:] = [name for name in subfolders if name not in ("manual", "extracted")]
        for name in files:
            path = pathlib.Path(folder, name)
            with contextlib.suppress(OSError):  # a file this user cannot read is not the one
                if path.stat().st_size == expected.size and sha256_of(path) == expected.checksum:
                    return path
    return None


def file_chunks(path: pathlib.Path):
    with open(path, "rb") as file:
        while chunk := file.read(DOWNLOAD_CHUNK_BYTES):
            yield chunk


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


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


# Evaluation -------------------------------------------------------------------------------------------


def evaluate(
    data: MovieLens,
    recipe: Recipe,
    seeds: list[int],
    log: "TensorBoardLog | None" = None,
    strategy: tf.distribute.Strategy | None = None,
) -> dict:
    """Trains on the tutorial's 80% split, once per seed, and compares each model with "most popular" on the
    other 20%. Returns the split's sizes, one dict of metrics per seed, and most-popular's metrics.
    With a TensorBoard log, each model gets a run folder with its loss curve, metrics and embeddings;
    with a distribution strategy, each is trained under it."""
    train_rows, test_rows = split_like_the_tutorial(data)
    check_memory(recipe, len(data.users), len(data.catalogue))
    user_ids_vocabulary, movie_titles_vocabulary = build_vocabularies(data)
    catalogue = data.catalogue
    training, held_out = data.subset(train_rows), data.subset(test_rows)
    # Most-popular learns nothing random, so one evaluation serves every seed.
    most_popular = held_out_metrics(
        build_most_popular_model(movie_titles_vocabulary, training), training, held_out
    )
    two_tower_runs = []
    for run_number, seed in enumerate(seeds, start=1):
        if len(seeds) > 1:
            progress(f"Run {run_number} of {len(seeds)}, seed {seed}")
        tf.keras.utils.set_random_seed(seed)
        run = log.new_run(seed) if log else None
        with (strategy or tf.distribute.get_strategy()).scope():
            two_tower = build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue, recipe)
            train(two_tower, training, recipe, seed, (log.callback(run),) if log else ())
        if strategy is not None and strategy is not tf.distribute.get_strategy():
            # Evaluated on this machine alone: Keras would otherwise spread the test set over the workers
            # and add up their top-k accuracies.
            trained, two_tower = two_tower, build_model(
                user_ids_vocabulary, movie_titles_vocabulary, catalogue, recipe
            )
            two_tower.user_model.set_weights(trained.user_model.get_weights())
            two_tower.movie_model.set_weights(trained.movie_model.get_weights())
        progress(f"Evaluating on {len(test_rows):,} held-out ratings")
        two_tower_runs.append(held_out_metrics(two_tower, training, held_out))
        if log:
            log.write_held_out(
                run, {"two_tower": two_tower_runs[-1], "most_popular": most_popular}, recipe.epochs - 1
            )
            log.write_projector(
                run, two_tower.movie_model(catalogue), catalogue, training.ratings_per_title()
            )
            progress(f"TensorBoard log in {run}")
    return {
        "split": {"train": len(train_rows), "test": len(test_rows)},
        "two_tower": two_tower_runs,
        "most_popular": most_popular,
    }


def spread(runs: list[dict]) -> dict:
    """Each metric's mean and sample standard deviation over the runs (0 for a single run)."""
    return {
        metric: {
            "mean": round(float(np.mean([run[metric] for run in runs])), 4),
            "std": round(float(np.std([run[metric] for run in runs], ddof=1)) if len(runs) > 1 else 0.0, 4),
        }
        for metric in runs[0]
    }


def split_like_the_tutorial(data: MovieLens) -> tuple[np.ndarray, np.ndarray]:
    """Returns the rows of the tutorial's held-out split: (training rows, test rows).

    The tutorial shuffles the 100,000 ratings once with fixed seeds and takes the first 80,000 for
    training and the other 20,000 for testing. Shuffling the row numbers the same way gives the same
    split, because a seeded shuffle's order depends only on the seeds, the buffer and the number of
    elements. Other sizes are split alike, 80% to train on, shuffled within SHUFFLE_BUFFER_SIZE ratings.
    """
    count = data.num_ratings
    tf.random.set_seed(SPLIT_SEED)
    rows = tf.data.Dataset.range(count)
    buffer = min(max(count, 100_000), SHUFFLE_BUFFER_SIZE)
    shuffled = rows.shuffle(buffer, seed=SPLIT_SEED, reshuffle_each_iteration=False)
    order = shuffled.batch(count).get_single_element().numpy()
    train_size = round(count * TRAIN_FRACTION)
    return order[:train_size], order[train_size:]


def build_most_popular_model(
    movie_titles_vocabulary: tf.keras.layers.StringLookup, training: MovieLens
) -> MovieLensModel:
    """ "Recommend the most rated movies" written as a two-tower model, so it is evaluated by the same code.

    Every user is the vector [1] and every movie the vector [its number of training ratings], so a
    user's score for a movie is that movie's popularity.
    """
    vocabulary_size = movie_titles_vocabulary.vocabulary_size()
    rating_counts = np.zeros([vocabulary_size, 1], np.float32)
    rating_counts[movie_titles_vocabulary(training.catalogue).numpy(), 0] = training.ratings_per_title()
    everyone_alike = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string),
            tf.keras.layers.Lambda(lambda user_ids: tf.ones([tf.shape(user_ids)[0], 1])),
        ]
    )
    movie_popularity = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string),
            movie_titles_vocabulary,
            tf.keras.layers.Embedding(
                vocabulary_size, 1, embeddings_initializer=tf.keras.initializers.Constant(rating_counts)
            ),
        ]
    )
    return MovieLensModel(
        everyone_alike, movie_popularity, retrieval_task(movie_popularity, training.catalogue)
    )


def held_out_metrics(model: MovieLensModel, training: MovieLens, held_out: MovieLens) -> dict:
    """Top-k accuracy as TFRS computes it, then Recall@10 and NDCG@10 with training movies left out."""
    test = tf.data.Dataset.range(held_out.num_ratings).batch(4096).map(training_features(held_out, TUTORIAL))
    # `compile` only because Keras requires it before `evaluate`; nothing is trained here.
    model.compile(optimizer=tf.keras.optimizers.Adagrad())
    results = model.evaluate(test, return_dict=True, verbose=0, callbacks=[EvaluationProgress()])
    metrics = {f"top_{k}": results[f"factorized_top_k/top_{k}_categorical_accuracy"] for k in TOP_KS}

    # Every movie is scored for every user, a block of users at a time: one matrix product each, and a
    # users x catalogue matrix small enough for 162,541 users in a few blocks.
    movie_embeddings = model.movie_model(training.catalogue)
    recalls, ndcgs, heartbeat = [], [], Heartbeat()
    for first in range(0, len(training.users), USERS_PER_BLOCK):
        block = slice(first, min(first + USERS_PER_BLOCK, len(training.users)))
        scores = tf.matmul(model.user_model(training.users[block]), movie_embeddings, transpose_b=True)
        recall, ndcg = ranking_metrics(
            scores.numpy(),
            seen=rated_matrix(training, block),
            relevant=rated_matrix(held_out, block),
            cutoff=RANKING_CUTOFF,
        )
        recalls.append(recall)
        ndcgs.append(ndcg)
        heartbeat.beat(f"  ranked the catalogue for {block.stop:,} of {len(training.users):,} users")
    recall, ndcg = np.concatenate(recalls), np.concatenate(ndcgs)
    metrics[f"recall_at_{RANKING_CUTOFF}"] = recall.mean() if len(recall) else math.nan
    metrics[f"ndcg_at_{RANKING_CUTOFF}"] = ndcg.mean() if len(ndcg) else math.nan
    return {name: round(float(value), 4) for name, value in metrics.items()}


class EvaluationProgress(tf.keras.callbacks.Callback):
    """Says how far Keras's evaluate has got, every few seconds (it takes minutes on MovieLens 25M)."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True

    def on_test_begin(self, logs=None):
        self.heartbeat = Heartbeat()

    def on_test_batch_end(self, batch, logs=None):
        self.heartbeat.beat(f"  top-k accuracy: {batches_done(batch, self.params)}")


def rated_matrix(data: MovieLens, users: slice) -> np.ndarray:
    """A users x catalogue boolean matrix for a block of users: True where the user rated the title."""
    offsets, rows = data.rated_by_user
    block = offsets[users.start : users.stop + 1]
    matrix = np.zeros((len(block) - 1, len(data.catalogue_titles)), dtype=bool)
    matrix[np.repeat(np.arange(len(block) - 1), np.diff(block)), rows[block[0] : block[-1]]] = True
    return matrix


def ranking_metrics(
    scores: np.ndarray, seen: np.ndarray, relevant: np.ndarray, cutoff: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@cutoff and NDCG@cutoff of each user with something relevant to find (others are left out).

    scores, seen and relevant are users x movies. Movies a user has seen in training are left out of
    their ranking, and a movie counts as relevant only if it was not seen. On equal scores the movie
    with the lower column comes first.
    """
    relevant = relevant & ~seen
    ranked = np.argsort(np.where(seen, np.inf, -scores), axis=1, kind="stable")[:, :cutoff]
    hits = np.take_along_axis(relevant, ranked, axis=1)
    num_relevant = relevant.sum(axis=1)
    users = num_relevant > 0
    discounts = 1.0 / np.log2(np.arange(2, cutoff + 2))  # rank 1 has gain 1/log2(2) = 1
    dcg = (hits * discounts).sum(axis=1)[users]
    ideal_dcg = np.cumsum(discounts)[np.minimum(num_relevant[users], cutoff) - 1]
    return hits.sum(axis=1)[users] / num_relevant[users], dcg / ideal_dcg


# TensorBoard ------------------------------------------------------------------------------------------

# TensorBoard, TensorFlow's own viewer, shows what training did (the loss, epoch by epoch) and what it
# made: its embedding projector draws the movie vectors in 2D or 3D (PCA, t-SNE or UMAP), each point
# labelled and coloured from a metadata table. Run `tensorboard --logdir DIR` and open its address.

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
    builder = tfds.builder(dataset_names(size)[1], data_dir=data_dir)
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


# Training on several devices -------------------------------------------------------------------------

# tf.distribute runs the same Keras training on several devices: each replica gets its share of every
# batch (the global batch is --batch-size) and the replicas' gradients are summed before each step.
# Building the towers and the optimizer inside strategy.scope() is all a Keras model needs. Each replica's
# in-batch softmax sees only its own share of the batch as negatives, so the loss per rating is lower
# than on one device; it is a different (easier) task per step, not a better model. (The tuned recipe's
# implicit ALS loss is a plain sum over ratings, so the replicas' shares add up to the same loss.)


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """TensorFlow's strategy for --distribute: none (the default, one device), mirrored (every local GPU,
    or every logical CPU device when there is no GPU) or multi-worker (the machines TF_CONFIG names).

    MultiWorkerMirroredStrategy must exist before TensorFlow runs its first operation, so main() calls
    this before anything else."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    devices = ", ".join(device.split("device:")[-1] for device in strategy.extended.worker_devices)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return f"Training with MirroredStrategy on {strategy.num_replicas_in_sync} replica(s): {devices}"
    resolver = strategy.cluster_resolver
    workers = len(resolver.cluster_spec().as_dict().get("worker", []))
    return (
        f"Training with MultiWorkerMirroredStrategy on {strategy.num_replicas_in_sync} replica(s) of {workers} "
        f"workers; this is worker {resolver.task_id}, using {devices}"
    )


def check_tf_config() -> None:
    """Refuses --distribute multi-worker without a TF_CONFIG that names the workers and this one."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UsageError(
            "--distribute multi-worker needs the TF_CONFIG environment variable, naming every worker and "
            'this one\'s index (see README.md, "Bigger data and more machines")'
        )
    try:
        config = json.loads(text)
        workers, task = config["cluster"]["worker"], config["task"]
        valid = isinstance(workers, list) and workers and 0 <= int(task["index"]) < len(workers)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise UsageError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process prints, evaluates, logs and saves: always, except for workers other than the
    first of a multi-worker cluster, which only train their share and leave quietly."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def no_kernel_message(strategy_name: str, error: tf.errors.OpError) -> str:
    """What to tell a user whose devices lack an operation the strategy placed on them."""
    detail = failure_reason(error)
    return (
        f"training with --distribute {strategy_name} failed: an operation has no kernel on these devices "
        f"({detail[:200]}). Adagrad's sparse update is the usual one: it has no GPU kernel under "
        "MirroredStrategy (tensorflow/recommenders#138, #269). Train without --distribute, or on the CPU "
        "only (CUDA_VISIBLE_DEVICES= python recommend.py ...)."
    )


# Save and load ----------------------------------------------------------------------------------------


def is_saved_recommender(directory: str) -> bool:
    """True only for a folder this script saved: recommender.json, the SavedModel, and nothing else."""
    try:
        with open(os.path.join(directory, SAVED_RECOMMENDER_FILE)) as file:
            marked = json.load(file).get("format") == SAVED_RECOMMENDER_FORMAT
        return marked and set(os.listdir(directory)) <= SAVED_RECOMMENDER_CONTENTS
    except (OSError, ValueError, AttributeError):
        return False


def check_save_dir(directory: str) -> None:
    """Refuses, before any training, a target this script could not or should not write."""
    if not directory:
        raise UsageError("--save-dir needs a folder name")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--save-dir {directory} is a file, not a folder")
    if os.path.isdir(directory) and os.listdir(directory) and not is_saved_recommender(directory):
        raise UsageError(
            f"--save-dir {directory} holds files that are not a saved recommender; not touching it"
        )
    # The save is staged in a new folder beside the target, so try exactly that.
    check_folder_can_be_made_in(pathlib.Path(os.path.abspath(directory)).parent, "--save-dir", directory)


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


def save_recommender(recommender: Recommender, details: dict, directory: str) -> None:
    """Writes a SavedModel plus recommender.json, all or nothing.

    Everything goes to a temporary folder beside the target first and is renamed into place only when
    complete, so an interrupted save leaves the previous model behind (or nothing), never half of one.
    """
    given, directory = directory, os.path.abspath(directory)
    existed = os.path.exists(directory)
    parent = os.path.dirname(directory)
    created = make_folders(pathlib.Path(parent))
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.saving-", dir=parent)
    set_aside = os.path.join(parent, f".{os.path.basename(directory)}.replaced-{os.path.basename(staging)}")
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private; a model folder needn't be
        tf.saved_model.save(
            recommender,
            staging,
            # The first is what every SavedModel server calls; the other two answer --similar-to and --liked.
            signatures={
                "serving_default": recommender.recommend.get_concrete_function(),
                "similar_movies": recommender.similar_movies.get_concrete_function(),
                "recommend_for_liked": recommender.recommend_for_liked.get_concrete_function(),
            },
        )
        with open(os.path.join(staging, SAVED_RECOMMENDER_FILE), "w") as file:
            json.dump({"format": SAVED_RECOMMENDER_FORMAT, **details}, file, indent=1)
        # Checked again: training took a while, and something else may have written there meanwhile.
        check_save_dir(directory)
        if os.path.exists(directory):
            os.rename(directory, set_aside)
        try:
            os.rename(staging, directory)
        except BaseException:
            if os.path.exists(set_aside):
                os.rename(set_aside, directory)
            raise
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty_folders(created)
        if isinstance(error, (OSError, tf.errors.OpError)):
            outcome = "the folder is as it was" if existed else "nothing was left behind"
            raise SaveFailed(
                f"could not save the recommender to {given}: {failure_reason(error)}; {outcome}"
            ) from None
        raise
    shutil.rmtree(set_aside, ignore_errors=True)


def failure_reason(error: Exception) -> str:
    """The first line of what went wrong: the OS's words for an OSError, TensorFlow's for an OpError."""
    reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    return reason.strip().splitlines()[0] if reason.strip() else type(error).__name__


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def load_recommender(directory: str):
    """Returns (the loaded SavedModel, its recommender.json), or a UsageError saying what is wrong."""
    if not directory:
        raise UsageError("--load-dir needs a folder name")
    if not os.path.isdir(directory):
        raise UsageError(f"--load-dir {directory} does not exist")
    if not os.listdir(directory):
        raise UsageError(f"--load-dir {directory} is empty: save a recommender there first with --save-dir")
    if not is_saved_recommender(directory):
        raise UsageError(f"--load-dir {directory} does not hold a recommender saved by this script")
    with open(os.path.join(directory, SAVED_RECOMMENDER_FILE)) as file:
        details = json.load(file)
    try:
        saved = tf.saved_model.load(directory)
    except Exception as error:  # A damaged or partial copy: say so rather than show TensorFlow's trace.
        raise UsageError(
            f"--load-dir {directory} could not be loaded: {str(error).splitlines()[0]}"
        ) from None
    return saved, details


# Command line -----------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if maximum is None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    if maximum is not None and not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, minimum=1)


def seed_number(text: str) -> int:
    return whole_number(text, minimum=0, maximum=2**32 - 1)  # what numpy's and TensorFlow's seeds accept


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def download_address(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// address, got {text!r}")
    return text


# The options that override a field of the recipe: (flag, type, Recipe field, metavar, help).
RECIPE_OPTIONS = [
    ("--epochs", positive_int, "epochs", "N", "passes over the ratings"),
    ("--embedding-dim", positive_int, "embedding_dim", "N", "numbers per user and per movie embedding"),
    (
        "--learning-rate",
        positive_float,
        "learning_rate",
        "RATE",
        "learning rate (Adagrad's; Adam's with --tuned)",
    ),
    ("--batch-size", positive_int, "batch_size", "N", "ratings per training step"),
]


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # One line instead of argparse's usage block: the message is what the user needs to read.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="recommend.py",
        description="Train the TensorFlow Recommenders two-tower model on MovieLens; recommend movies.",
        allow_abbrev=False,
    )
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument(
        "--user",
        metavar="ID",
        help="the MovieLens user id to recommend for, e.g. 42 (or give --similar-to, --liked or --evaluate)",
    )
    task.add_argument(
        "--similar-to",
        metavar="TITLE",
        help="list the movies most similar to this one: the cosine of their movie embeddings, since a "
        "vector's length mostly reflects popularity and its direction who watches it. TITLE is the exact "
        "title, or a part of exactly one in any case and without accents, e.g. 'star wars' or 'miserables'",
    )
    task.add_argument(
        "--liked",
        metavar="TITLE",
        action="append",
        help="recommend for a new viewer who liked this movie; repeat it for each film (matched as for "
        "--similar-to). The named films are left out unless --include-rated",
    )
    task.add_argument(
        "--evaluate",
        action="store_true",
        help="train on the tutorial's 80%% split and compare with recommending the most popular movies "
        "(default: off)",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        metavar="N",
        help="with --evaluate: train N times, with seeds --seed to --seed+N-1, and report each metric's mean "
        "and sample standard deviation (default: once, plain numbers)",
    )
    parser.add_argument(
        "--k",
        type=positive_int,
        default=10,
        metavar="N",
        help="how many movies to recommend (default: %(default)s)",
    )
    parser.add_argument(
        "--include-rated",
        action="store_true",
        help="also recommend movies the user has already rated, or the --liked films (default: leave them out)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of a table (default: off)"
    )
    training = parser.add_argument_group("training (ignored with --load-dir, which reuses a trained model)")
    training.add_argument(
        "--tuned",
        action="store_true",
        help="train with the tuned recipe instead of the tutorial's (default: off)",
    )
    for flag, parse, name, metavar, meaning in RECIPE_OPTIONS:
        tutorial, tuned = getattr(TUTORIAL, name), getattr(TUNED, name)
        default = f"{tutorial:g}" + (f"; {tuned:g} with --tuned" if tuned != tutorial else "")
        training.add_argument(flag, type=parse, metavar=metavar, help=f"{meaning} (default: {default})")
    training.add_argument(
        "--seed",
        type=seed_number,
        default=DEFAULT_SEED,
        metavar="N",
        help="seeds every random choice (default: %(default)s)",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASET_SIZES,
        default="100k",
        help="which MovieLens: 100k ratings (the tutorial's), 1m, 20m or 25m; ignored with --load-dir "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--distribute",
        choices=("none", "mirrored", "multi-worker"),
        default="none",
        help="train with a tf.distribute strategy: mirrored copies the model to every local GPU (or every "
        "logical CPU device when there is none) and splits each batch between them; multi-worker does so "
        "across the machines the TF_CONFIG environment variable names, and only worker 0 prints, logs and "
        "saves (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="TensorFlow Datasets folder holding (or to receive) MovieLens; ignored with --load-dir "
        "(default: TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--download-url",
        type=download_address,
        metavar="URL",
        help="fetch the MovieLens archive from this mirror (http or https) instead of GroupLens; it is "
        "accepted only if its SHA-256 is the one TensorFlow Datasets registered (default: GroupLens)",
    )
    saving = parser.add_mutually_exclusive_group()
    saving.add_argument(
        "--save-dir",
        metavar="DIR",
        help="after training, save the recommender here as a SavedModel (default: not saved)",
    )
    saving.add_argument(
        "--load-dir",
        metavar="DIR",
        help="answer from a recommender saved with --save-dir: no data, no training (default: train one)",
    )
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write a TensorBoard log of each model trained: the loss per epoch, held-out metrics with "
        "--evaluate, and the movie embeddings for the projector, in a new run folder under DIR; then run "
        "`tensorboard --logdir DIR` (default: no log)",
    )
    parser.add_argument(
        "--timings", action="store_true", help="print how long each phase took, on stderr (default: off)"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full Python trace of an unexpected error instead of a one-line summary (default: off)",
    )
    return parser


def recipe_from(args: argparse.Namespace) -> Recipe:
    """The tutorial's or the tuned recipe, with whatever the command line set explicitly."""
    base = TUNED if args.tuned else TUTORIAL
    overrides = {
        name: getattr(args, name) for _, _, name, _, _ in RECIPE_OPTIONS if getattr(args, name) is not None
    }
    return dataclasses.replace(base, **overrides)


def describe_ids(ids) -> str:
    """Sums up ids for an error message: "1-943" for a run of numbers, otherwise the first few."""
    ids = [str(user_id) for user_id in ids]
    if all(user_id.isdigit() for user_id in ids):
        runs = []  # [first, last] of each run of consecutive numbers
        for number in sorted(int(user_id) for user_id in ids):
            if runs and number == runs[-1][1] + 1:
                runs[-1][1] = number
            else:
                runs.append([number, number])
        parts = [f"{first}-{last}" if first != last else f"{first}" for first, last in runs]
    else:
        parts = sorted(ids)
    return ", ".join(parts[:5]) + (", ..." if len(parts) > 5 else "")


def check_request(
    user_id: str, k: int, include_rated: bool, rated_counts: dict[str, int], catalogue_size: int
) -> None:
    """Refuses an unknown user or a k larger than what can be recommended to them."""
    if user_id not in rated_counts:
        raise UsageError(f"user {user_id!r} is not in the data; user ids are {describe_ids(rated_counts)}")
    if include_rated and k > catalogue_size:
        raise UsageError(f"--k {k} is more than the {catalogue_size} movies in the catalogue")
    unrated = catalogue_size - rated_counts[user_id]
    if not include_rated and k > unrated:
        raise UsageError(
            f"--k {k} is more than the {unrated} movies user {user_id} has not rated "
            f"(they rated {rated_counts[user_id]} of {catalogue_size}; "
            f"--include-rated allows up to {catalogue_size})"
        )


class Stopwatch:
    """Times the phases of a run, for --timings."""

    def __init__(self):
        self.phases = {"import": IMPORTED_AT - STARTED_AT}
        self.lap_started_at = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.lap_started_at
        self.lap_started_at = now

    def report(self) -> str:
        parts = [f"{phase} {seconds:.1f}s" for phase, seconds in self.phases.items()]
        report = "timings: " + ", ".join(parts) + f", total {sum(self.phases.values()):.1f}s"
        try:
            import resource  # Unix only
        except ImportError:
            return report
        # The most memory this process has held at once. Linux counts it in KiB, macOS in bytes.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return report + f"; peak memory {peak / 2**30:.2f} GiB"


def print_ranking(heading: str, items: list[dict], document: dict, as_json: bool) -> None:
    """Prints a ranked list of movies as a table under a heading, or DOCUMENT as one line of JSON."""
    if as_json:
        print(json.dumps(document, ensure_ascii=False))
        return
    print(heading)
    width = max(len("title"), *(len(item["title"]) for item in items))
    print(f"{'rank':>4}  {'title':<{width}}  {'score':>5}")
    for item in items:
        print(f"{item['rank']:>4}  {item['title']:<{width}}  {item['score']:>5.2f}")


def print_evaluation(results: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results))
        return
    split = results["split"]
    print(f"Held-out evaluation: trained on {split['train']:,} ratings, tested on {split['test']:,}")
    if "repeat" in results:
        seeds = results["seeds"]
        print(f"Mean ± standard deviation over {results['repeat']} runs, seeds {seeds[0]} to {seeds[-1]}")

    def cell(value) -> str:
        return f"{value['mean']:.4f} ± {value['std']:.4f}" if isinstance(value, dict) else f"{value:.4f}"

    width = max(len("most_popular"), *(len(cell(value)) for value in results["two_tower"].values()))
    print(f"{'metric':<14}{'two_tower':>{width}}  {'most_popular':>{width}}")
    for metric in results["two_tower"]:
        two_tower, most_popular = cell(results["two_tower"][metric]), cell(results["most_popular"][metric])
        print(f"{metric:<14}{two_tower:>{width}}  {most_popular:>{width}}")


def check_data_dir(directory: str | None) -> None:
    if directory is not None and (
        not directory or (os.path.exists(directory) and not os.path.isdir(directory))
    ):
        raise UsageError(f"--data-dir {directory!r} is not a folder")


def check_question(
    args: argparse.Namespace, catalogue_size: int, rated_counts: dict[str, int], titles: list[str] | None
) -> dict:
    """Checks what was asked against the data before any training, and names the movies it means.
    TITLES, the catalogue as text, is needed only for --similar-to and --liked.

    Returns {"user": id}, {"similar_to": title} or {"liked": [titles]}, with every title exact."""
    size = catalogue_size
    if args.user is not None:
        check_request(args.user, args.k, args.include_rated, rated_counts, size)
        return {"user": args.user}
    if args.similar_to is not None:
        if args.include_rated:
            progress(
                "note: --include-rated ignored: --similar-to never lists the movie itself, and nothing else"
            )
        title = match_title(args.similar_to, titles)
        if args.k > size - 1:
            raise UsageError(f"--k {args.k} is more than the {size - 1} other movies in the catalogue")
        return {"similar_to": title}
    liked = []
    for text in args.liked:
        title = match_title(text, titles)
        if title in liked:
            progress(f"note: {title!r} was named more than once; it counts once")
        else:
            liked.append(title)
    left = size if args.include_rated else size - len(liked)
    if args.k > left:
        raise UsageError(f"--k {args.k} is more than the {left} movies left to recommend")
    return {"liked": liked}


def answer(recommender, question: dict, args: argparse.Namespace) -> None:
    """Asks the recommender (trained or loaded) the checked question and prints its answer."""
    if "user" in question:
        user_id = question["user"]
        items = recommend(recommender, user_id, args.k, args.include_rated)
        which = "" if args.include_rated else ", leaving out movies they have rated"
        heading = f"Top {len(items)} movies for user {user_id}{which}:"
        document = {"user": user_id, "recommendations": items}
    elif "similar_to" in question:
        title = question["similar_to"]
        items = similar_movies(recommender, title, args.k)
        heading = f"The {len(items)} movies most similar to {title} (cosine of their embeddings):"
        document = {"title": title, "similar": items}
    else:
        liked = question["liked"]
        items = recommend_for_liked(recommender, liked, args.k, args.include_rated)
        names = liked[0] if len(liked) == 1 else ", ".join(liked[:-1]) + " and " + liked[-1]
        which = "" if args.include_rated else f", leaving {'it' if len(liked) == 1 else 'those'} out"
        heading = f"Top {len(items)} movies for a viewer who liked {names}{which}:"
        document = {"liked": liked, "recommendations": items}
    print_ranking(heading, items, document, args.json)


def run_recommend(args: argparse.Namespace, stopwatch: Stopwatch, strategy: tf.distribute.Strategy) -> None:
    check_data_dir(args.data_dir)
    if args.save_dir is not None:
        check_save_dir(args.save_dir)
    if args.tensorboard is not None:
        check_tensorboard_dir(args.tensorboard)
    if args.save_dir and args.tensorboard and nested(args.save_dir, args.tensorboard):
        raise UsageError(
            "--save-dir and --tensorboard must not be inside each other: each folder holds only its own files"
        )
    recipe = recipe_from(args)
    data = load_movielens(args.data_dir, args.download_url, args.dataset)
    log = tensorboard_log(args) if is_chief(strategy) else None
    rated_counts = rated_titles_per_user(data)
    catalogue_size = len(data.catalogue)
    titles = [title.decode("utf-8") for title in data.catalogue]
    question = check_question(args, catalogue_size, rated_counts, titles)
    stopwatch.lap("load")

    # One seed for Python, numpy and TensorFlow: the embeddings' starting values and the shuffling. On a
    # CPU that is enough for identical answers run after run; tf.config.experimental.enable_op_determinism()
    # gave the same numbers here at half again the training time.
    check_memory(recipe, len(rated_counts), catalogue_size)
    tf.keras.utils.set_random_seed(args.seed)
    user_ids_vocabulary, movie_titles_vocabulary = build_vocabularies(data)
    stopwatch.lap("vocabularies")

    run = log.new_run(args.seed) if log else None
    callbacks = (log.callback(run),) if log else ()
    with strategy.scope():
        model = build_model(user_ids_vocabulary, movie_titles_vocabulary, data.catalogue, recipe)
        train(model, data, recipe, args.seed, callbacks)
    stopwatch.lap("training")

    recommender = build_index(model, data, fold_in_l2_for(recipe))
    stopwatch.lap("indexing")

    answer(recommender, question, args)
    stopwatch.lap("query")

    if log:
        log.write_projector(run, recommender.movie_embeddings, data.catalogue, data.ratings_per_title())
        progress(f"TensorBoard log in {run}; to see it: tensorboard --logdir {shlex.quote(args.tensorboard)}")

    if args.save_dir is not None and is_chief(strategy):
        details = {
            "dataset": data.size,
            "catalogue_size": catalogue_size,
            "rated_counts": rated_counts,
            "training": {
                "recipe": "tuned" if args.tuned else "tutorial",
                "seed": args.seed,
                **dataclasses.asdict(recipe),
            },
        }
        save_recommender(recommender, details, args.save_dir)
        progress(f"Saved the recommender to {args.save_dir}")
        stopwatch.lap("saving")


def tensorboard_log(args: argparse.Namespace) -> "TensorBoardLog | None":
    if args.tensorboard is None:
        return None
    return TensorBoardLog(
        args.tensorboard,
        "tuned" if args.tuned else "tutorial",
        read_movie_genres(args.data_dir, args.dataset),
    )


def nested(first: str, second: str) -> bool:
    """True when one folder is, or is inside, the other."""
    first, second = os.path.realpath(first), os.path.realpath(second)
    return os.path.commonpath([first, second]) in (first, second)


def run_load(args: argparse.Namespace, stopwatch: Stopwatch) -> None:
    if args.tensorboard is not None:
        raise UsageError("--tensorboard logs training, and --load-dir trains nothing")
    given = {flag: getattr(args, name) is not None for flag, _, name, _, _ in RECIPE_OPTIONS}
    given.update(
        {
            "--seed": args.seed != DEFAULT_SEED,
            "--data-dir": args.data_dir is not None,
            "--dataset": args.dataset != "100k",
            "--distribute": args.distribute != "none",
            "--download-url": args.download_url is not None,
        }
    )
    ignored = (["--tuned"] if args.tuned else []) + [flag for flag, was_given in given.items() if was_given]
    recommender, details = load_recommender(args.load_dir)
    if ignored:
        progress(f"note: {', '.join(ignored)} ignored: the recommender in {args.load_dir} is already trained")
    if args.user is None and not hasattr(recommender, "similar_movies"):
        raise UsageError(
            f"the recommender in {args.load_dir} was saved before --similar-to and --liked existed; "
            "train and save it again to ask it those"
        )
    titles = catalogue_titles(recommender) if args.user is None else None
    question = check_question(args, details["catalogue_size"], details["rated_counts"], titles)
    stopwatch.lap("load")
    answer(recommender, question, args)
    stopwatch.lap("query")


def run_evaluate(args: argparse.Namespace, stopwatch: Stopwatch, strategy: tf.distribute.Strategy) -> None:
    if args.repeat is not None and args.seed + args.repeat - 1 > 2**32 - 1:
        raise UsageError(
            f"--seed {args.seed} with --repeat {args.repeat} runs past the largest seed, 4294967295"
        )
    if args.load_dir is not None or args.save_dir is not None:
        raise UsageError(
            "--evaluate trains its own model on the 80% split; it cannot use --load-dir or --save-dir"
        )
    check_data_dir(args.data_dir)
    if args.tensorboard is not None:
        check_tensorboard_dir(args.tensorboard)
    data = load_movielens(args.data_dir, args.download_url, args.dataset)
    log = tensorboard_log(args) if is_chief(strategy) else None
    stopwatch.lap("load")
    repeat = args.repeat or 1
    seeds = list(range(args.seed, args.seed + repeat))
    results = evaluate(data, recipe_from(args), seeds, log, strategy)
    stopwatch.lap("evaluation")
    if args.repeat is None:
        results["two_tower"] = results["two_tower"][0]
    else:
        # Most-popular is the same on every seed: its spread is honestly zero.
        results.update(
            repeat=repeat,
            seeds=list(range(args.seed, args.seed + repeat)),
            two_tower=spread(results["two_tower"]),
            most_popular=spread([results["most_popular"]] * repeat),
        )
    print_evaluation(results, args.json)


def quiet_logs(distribute: str) -> tf.distribute.Strategy:
    """Keeps TensorFlow's and TFDS's own logging out of the way: stderr is for this program's progress.
    Returns the --distribute strategy, made here because a multi-worker one must come before any op."""
    tf.get_logger().setLevel("ERROR")
    tf.autograph.set_verbosity(0)
    absl_logging.set_verbosity(absl_logging.ERROR)
    if distribute == "multi-worker":
        check_tf_config()
    # TensorFlow looks for a GPU the first time it runs an op and logs from C++ when there is none.
    with native_stderr_captured():
        strategy = distribution_strategy(distribute)
        tf.config.list_logical_devices()
    return strategy


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as parser_exit:  # argparse exits for --help and for usage errors (already reported)
        return int(parser_exit.code or 0)
    stopwatch = Stopwatch()
    try:
        strategy = quiet_logs(args.distribute)
        if args.repeat is not None and not args.evaluate:
            raise UsageError(
                "--repeat repeats an --evaluate run; it does nothing for --user, --similar-to or --liked"
            )
        if args.distribute != "none" and args.load_dir is not None:
            raise UsageError("--distribute trains, and --load-dir trains nothing")
        # A worker other than the first trains its share and leaves quietly: nothing on stdout or stderr.
        quiet = contextlib.ExitStack()
        if not is_chief(strategy):
            devnull = quiet.enter_context(open(os.devnull, "w"))
            quiet.enter_context(contextlib.redirect_stdout(devnull))
            quiet.enter_context(contextlib.redirect_stderr(devnull))
        elif args.distribute != "none":
            progress(describe_strategy(strategy))
        with quiet:
            if args.evaluate:
                run_evaluate(args, stopwatch, strategy)
            elif args.load_dir is not None:
                run_load(args, stopwatch)
            else:
                run_recommend(args, stopwatch, strategy)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except (DataUnavailableError, TrainingDiverged, SaveFailed) as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    except (tf.errors.ResourceExhaustedError, MemoryError) as error:
        detail = (getattr(error, "message", None) or str(error) or "out of memory").strip().splitlines()[0]
        print(
            f"{parser.prog}: ran out of memory ({detail[:200]}); try a smaller --batch-size or --embedding-dim",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read stdout has gone (`... | head`): point stdout at nothing so the final flush cannot
        # fail too, and end as a program stopped by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # A bug, or a failure nobody foresaw: summarise it, trace on request.
        if args.debug:
            raise
        if args.distribute != "none" and isinstance(error, tf.errors.OpError) and "OpKernel" in str(error):
            print(f"{parser.prog}: {no_kernel_message(args.distribute, error)}", file=sys.stderr)
            return 1
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"{parser.prog}: unexpected {type(error).__name__}: {detail[:300]}\n"
            "  Run again with --debug to see the full trace, and please report it.",
            file=sys.stderr,
        )
        return 1
    if args.timings:
        progress(stopwatch.report())
    return 0


if __name__ == "__main__":
    status = main()
    # On exit Python garbage-collects every object TensorFlow made, which takes most of a second. The
    # process is ending anyway, so take them out of the collector's sight.
    gc.freeze()
    sys.exit(status)
