"""Recommend movies with a two-tower retrieval model: the TensorFlow Recommenders tutorial, runnable.

A retrieval model answers "which few of thousands of movies should this user see?" It learns one
embedding per user and one per movie so that a user's vector scores high (dot product) against the
movies they watched. Because the two towers never look at each other, every movie can be scored for
a user with one matrix product, which is what makes retrieval fast.

The six steps, one function each, in the order they appear below:

    1. load_movielens       read MovieLens ratings and movie titles with TensorFlow Datasets
    2. build_vocabularies   map user ids and movie titles to embedding rows (StringLookup)
    3. build_model          the user tower, the movie tower and the retrieval task (tfrs.Model)
    4. train                fit both towers with Adagrad on the in-batch softmax
    5. build_index          score every movie for a user (BruteForce)
    6. recommend            ask the index for one user's top k, leaving out movies they rated

Everything beyond the tutorial (evaluation, the tuned recipe, saving, similar movies, TensorBoard,
downloading, bigger data, tf.distribute, and the command line itself) lives in the beyond/ package
beside this file; docs/architecture.md draws it. Run it:

    python recommend.py --user 42                  # train, then print user 42's top 10
    python recommend.py --user 42 --k 5 --json     # the same as one JSON document
    python recommend.py --evaluate                 # is the model better than "most popular"?
    python recommend.py --help                     # everything else
"""

import contextlib
import dataclasses
import functools
import os
import sys
import tempfile
import time

# TensorFlow Recommenders is written for Keras 2. Since TensorFlow 2.16, `tf.keras` is Keras 3 unless
# this is set before TensorFlow is imported; then `tf.keras` is the tf-keras package (Keras 2).
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
STARTED_AT = time.perf_counter()


@contextlib.contextmanager
def native_stderr_captured():
    """Sends what C++ code writes to stderr into a scratch file, shown only if the block fails: the lines
    TensorFlow's core logs while it loads ignore TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442)."""
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        except BaseException:
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
        import tensorflow as tf
        import tensorflow_datasets as tfds
        import tensorflow_recommenders as tfrs
except KeyboardInterrupt:  # Ctrl-C in the seconds TensorFlow takes to import: end as main() would
    if __name__ != "__main__":
        raise
    print("recommend.py: interrupted", file=sys.stderr)
    sys.exit(130)

IMPORTED_AT = time.perf_counter()
# Long work says how far it has got at least this often, on stderr.
PROGRESS_EVERY_SECONDS = 10


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the towers are trained. The defaults are the TFRS tutorial's."""

    embedding_dim: int = 64  # numbers per user and per movie
    # Adagrad shrinks each embedding row's steps as its squared gradients add up, so rarely seen users
    # and movies still learn quickly while popular ones settle: that is why a rate of 0.5 is stable.
    learning_rate: float = 0.5
    batch_size: int = 4096  # each rating's negatives are the other movies of its batch
    epochs: int = 3
    shuffle_each_epoch: bool = False  # the tutorial feeds the ratings in the same order every epoch
    optimizer: str = "adagrad"


TUTORIAL = Recipe()


# 1. Load ----------------------------------------------------------------------------------------------

RATING_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "movie_title": tf.io.FixedLenFeature([], tf.string),
    # The tutorial uses only who rated what; the tuned recipe also weighs each rating by its stars.
    "user_rating": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
}
MOVIE_FEATURES = {"movie_title": tf.io.FixedLenFeature([], tf.string)}
READ_CHUNK_SIZE = 1_000_000  # ratings parsed at once: all of 100k, and bounded memory for 25M
TOP_KS = (1, 5, 10, 50, 100)  # the cut-offs of the tutorial's top-k accuracy


@dataclasses.dataclass(frozen=True)
class MovieLens:
    """MovieLens as numbers: each rating is its user's row in `users`, its title's row in `titles`, and
    its stars. Each id and title is kept once, so 25 million ratings take 300 MB, not gigabytes."""

    users: np.ndarray  # every user id that rated something, sorted (UTF-8 bytes, as TFDS stores text)
    titles: np.ndarray  # every distinct title of the movies dataset, sorted
    rating_users: np.ndarray  # int32, one per rating
    rating_titles: np.ndarray  # int32, one per rating
    rating_stars: np.ndarray  # float32, one per rating
    movies: np.ndarray  # the title of every movie id (18 titles of 100k belong to two ids each)
    # The rows of `titles` somebody rated: what can be recommended. Two ids of one title share its
    # embedding, so each title is listed once; a title nobody rated keeps its random vector and is left out.
    catalogue_titles: np.ndarray
    size: str = "100k"

    @classmethod
    def from_ratings(cls, user_ids, movie_titles, movies, size="100k", stars=None) -> "MovieLens":
        """From one user id and one title per rating (bytes) and the movies' titles; without STARS, 5 each."""
        users, rating_users = np.unique(np.asarray(user_ids, dtype=object), return_inverse=True)
        titles, rating_titles = np.unique(np.asarray(movie_titles, dtype=object), return_inverse=True)
        stars = np.full(len(rating_users), 5.0) if stars is None else stars
        return cls.from_numbered(users, rating_users, titles, rating_titles, stars, movies, size)

    @classmethod
    def from_numbered(cls, users, rating_users, seen_titles, rating_titles, stars, movies, size):
        """From ratings numbered by rows of any lists of users and titles: re-numbers both by sorted rows."""
        user_order = np.argsort(users, kind="stable")
        user_rows = np.empty(len(users), np.int32)
        user_rows[user_order] = np.arange(len(users), dtype=np.int32)
        titles = np.unique(np.asarray(movies, dtype=object))
        title_rows = np.searchsorted(titles, seen_titles).astype(np.int32)
        unknown = [title for title, row in zip(seen_titles, title_rows) if row == len(titles) or titles[row] != title]
        if unknown:
            raise ValueError(f"{len(unknown)} rated titles are not in the movies dataset, such as {unknown[0]!r}")
        rating_titles = title_rows[rating_titles]
        return cls(
            users=np.asarray(users, dtype=object)[user_order],
            titles=titles,
            rating_users=user_rows[rating_users],
            rating_titles=rating_titles,
            rating_stars=np.asarray(stars, np.float32),
            movies=np.asarray(movies, dtype=object),
            catalogue_titles=np.flatnonzero(np.bincount(rating_titles, minlength=len(titles))).astype(np.int32),
            size=size,
        )

    @property
    def num_ratings(self) -> int:
        return len(self.rating_users)

    @property
    def user_ids(self) -> np.ndarray:
        """Who gave each rating, as text: a Python object a rating, so only for small data."""
        return self.users[self.rating_users]

    @property
    def movie_titles(self) -> np.ndarray:
        return self.titles[self.rating_titles]

    @functools.cached_property
    def catalogue(self) -> np.ndarray:
        """Every title somebody rated, sorted."""
        return self.titles[self.catalogue_titles]


class DatasetUnreadable(Exception):
    """A prepared TFDS dataset could not be read; args: its name and the error."""


def load_movielens(data_dir: str | None = None, size: str = "100k") -> MovieLens:
    """Reads who rated which movie with how many stars, and every movie's title, from TensorFlow Datasets."""
    ratings_name, movies_name = f"movielens/{size}-ratings", f"movielens/{size}-movies"
    users, titles, heartbeat = {}, {}, Heartbeat()
    rating_users, rating_titles, stars = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
    for chunk in read_features(ratings_name, RATING_FEATURES, data_dir):
        rating_users.append(numbered(chunk["user_id"], users))
        rating_titles.append(numbered(chunk["movie_title"], titles))
        stars.append(chunk["user_rating"].numpy())
        heartbeat.beat(f"  read {sum(map(len, stars)):,} ratings of {ratings_name}")
    movies = [chunk["movie_title"].numpy() for chunk in read_features(movies_name, MOVIE_FEATURES, data_dir)]
    try:
        return MovieLens.from_numbered(
            *(np.array(list(users), dtype=object), np.concatenate(rating_users)),
            *(np.array(list(titles), dtype=object), np.concatenate(rating_titles)),
            np.concatenate(stars),
            np.concatenate([np.zeros(0, dtype=object), *movies]),
            size,
        )
    except ValueError as error:  # a rating of a title the movies lack: the ratings' copy is damaged
        raise DatasetUnreadable(ratings_name, error) from None


def numbered(values: tf.Tensor, numbers: dict[bytes, int]) -> np.ndarray:
    """Numbers VALUES in the order first seen, adding new ones to NUMBERS; only distinct values become
    Python objects."""
    distinct, rows = tf.unique(values)
    known = [numbers.setdefault(value, len(numbers)) for value in distinct.numpy().tolist()]
    return np.array(known, dtype=np.int32)[rows.numpy()]


def read_features(name: str, features: dict, data_dir: str | None = None):
    """Yields FEATURES of every example of a TFDS dataset, a chunk at a time: what `tfds.load(name,
    split="train")` gives, in the same order. TFDS decodes one example at a time; parsing its TFRecord
    files a million examples per call instead is several times faster (docs/speed.md)."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()  # what tfds.load does first; nothing when already prepared
        if builder.info.file_format != tfds.core.FileFormat.TFRECORD:  # ArrayRecord, say: TFDS reads it
            decoders = tfds.decode.PartialDecoding(dict.fromkeys(features, True))
            yield from builder.as_dataset(split="train", decoders=decoders).batch(READ_CHUNK_SIZE)
            return
        chunks = tf.data.TFRecordDataset(builder.info.splits["train"].filepaths).batch(READ_CHUNK_SIZE)
        yield from chunks.map(lambda examples: tf.io.parse_example(examples, features), num_parallel_calls=2)
    except (tf.errors.OpError, OSError, ValueError) as error:
        raise DatasetUnreadable(name, error) from None


# 2. Vocabularies --------------------------------------------------------------------------------------


def build_vocabularies(data: MovieLens) -> tuple[tf.keras.layers.StringLookup, tf.keras.layers.StringLookup]:
    """Maps each user id and movie title to a row of its embedding table."""

    # The tutorial calls `adapt()`, which takes about a minute fed one example at a time. Counting with
    # numpy gives the same vocabulary in milliseconds: most frequent first, ties by the token descending.
    def by_frequency(distinct: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return distinct[np.lexsort((distinct, counts))[::-1]]

    # `mask_token=None` leaves one extra row, index 0, for ids never seen: an untrained row, not an error.
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

    def __init__(self, user_model: tf.keras.Model, movie_model: tf.keras.Model, task: tfrs.tasks.Retrieval):
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        self.task = task
        # Keras resets metrics every epoch, so this adds up one epoch's loss for the progress line.
        self.summed_loss = tf.keras.metrics.Sum(name="summed_loss")

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if training:
            loss = self.training_loss(features)
            self.summed_loss.update_state(loss)
            return loss
        # Evaluating: the tutorial's call. Its FactorizedTopK metric ranks each rating's movie among the
        # whole catalogue, a full product per rating, so it runs only here: while training it was half the time.
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        return self.task(user_embeddings, movie_embeddings)

    def training_loss(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return in_batch_softmax_loss(self.user_model, self.movie_model, features["user_id"], features["movie_title"])

    def features(self, data: MovieLens):
        """What the model trains on, for a batch of rating numbers (see rating_features)."""
        return rating_features(data)


def in_batch_softmax_loss(user_model, movie_model, user_ids: tf.Tensor, movie_titles: tf.Tensor) -> tf.Tensor:
    """The loss `tfrs.tasks.Retrieval` computes by default, summed over the batch, in a quarter of the time.

    Retrieval scores every rating's user against every rating's movie (4096 x 4096) and asks a softmax to
    pick the rating's own movie. But a batch holds only about 1,000 distinct movies and 900 users, and
    copies of a movie score alike, so the logsumexp over the batch's movies equals one over its distinct
    movies m, each adding log count(m). The same loss and gradients, without the duplicated work.
    """
    users, user_rows = tf.unique(user_ids)
    movies, movie_columns = tf.unique(movie_titles)
    user_embeddings, movie_embeddings = user_model(users), movie_model(movies)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(movie_columns, tf.float32), movie_columns, tf.size(movies))
    logits = tf.matmul(user_embeddings, movie_embeddings, transpose_b=True) + tf.math.log(counts)
    own_scores = tf.reduce_sum(tf.gather(user_embeddings, user_rows) * tf.gather(movie_embeddings, movie_columns), 1)
    return tf.reduce_sum(tf.gather(tf.reduce_logsumexp(logits, axis=1), user_rows) - own_scores)


def tower(vocabulary: tf.keras.layers.StringLookup, embedding_dim: int, regularizer=None) -> tf.keras.Model:
    """A lookup, then an embedding. The explicit string Input fixes the input type up front: without it
    tf-keras guesses wrongly when the tower is first called inside `dataset.map`."""
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string),
            vocabulary,
            tf.keras.layers.Embedding(vocabulary.vocabulary_size(), embedding_dim, embeddings_regularizer=regularizer),
        ]
    )


def retrieval_task(movie_model: tf.keras.Model, catalogue: np.ndarray) -> tfrs.tasks.Retrieval:
    # The metric ranks against the whole catalogue, mapped through the tower whenever it is computed.
    candidates = tf.data.Dataset.from_tensor_slices(catalogue).batch(2048).map(movie_model)
    return tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(candidates=candidates, ks=TOP_KS))


def build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue: np.ndarray, recipe: Recipe) -> MovieLensModel:
    """Builds the user and movie towers and joins them with a retrieval task."""
    user_model = tower(user_ids_vocabulary, recipe.embedding_dim)
    movie_model = tower(movie_titles_vocabulary, recipe.embedding_dim)
    return MovieLensModel(user_model, movie_model, retrieval_task(movie_model, catalogue))


# 4. Train ---------------------------------------------------------------------------------------------

# tf.data's shuffle holds its buffer, about 200 bytes a rating: all of 100k and 1M, a window of 20M and 25M.
SHUFFLE_BUFFER_SIZE = 2_000_000


def rating_features(data: MovieLens):
    """For a batch of rating numbers, who rated which title, as the text the towers take. Only a batch is
    ever turned into text: 25 million ratings as text would take gigabytes."""
    users, titles = tf.constant(data.users, tf.string), tf.constant(data.titles, tf.string)
    rating_users, rating_titles = tf.constant(data.rating_users), tf.constant(data.rating_titles)
    return lambda rows: {
        "user_id": tf.gather(users, tf.gather(rating_users, rows)),
        "movie_title": tf.gather(titles, tf.gather(rating_titles, rows)),
    }


def train(model: MovieLensModel, data: MovieLens, recipe: Recipe, seed: int, callbacks=()) -> None:
    """Fits both towers with the recipe's optimizer; CALLBACKS are Keras's (progress, TensorBoard)."""
    # The dataset holds rating numbers, which shuffle into the same order as the ratings themselves.
    ratings = tf.data.Dataset.range(data.num_ratings)
    one_batch = data.num_ratings <= recipe.batch_size
    if recipe.shuffle_each_epoch and not one_batch:
        ratings = ratings.shuffle(min(data.num_ratings, SHUFFLE_BUFFER_SIZE), seed=seed, reshuffle_each_iteration=True)
    batches = ratings.batch(recipe.batch_size).map(model.features(data))
    if one_batch:  # the same batch every pass: made once
        batches = batches.cache()
    optimizers = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam}
    model.compile(optimizer=optimizers[recipe.optimizer](learning_rate=recipe.learning_rate))
    model.fit(batches.prefetch(tf.data.AUTOTUNE), epochs=recipe.epochs, verbose=0, callbacks=list(callbacks))


# 5. Index ---------------------------------------------------------------------------------------------


def build_index(model: MovieLensModel, data: MovieLens) -> tfrs.layers.factorized_top_k.BruteForce:
    """Embeds every movie once and indexes the embeddings for exact (brute-force) top-k search. The
    catalogue is sorted by title and top-k keeps the earlier of equal scores, so ties go alphabetically."""
    index = tfrs.layers.factorized_top_k.BruteForce(model.user_model)
    index.index(candidates=model.movie_model(data.catalogue), identifiers=tf.constant(data.catalogue))
    return index


# 6. Recommend -----------------------------------------------------------------------------------------


def recommend(index, data: MovieLens, user_id: str, k: int = 10, include_rated: bool = False) -> list[dict]:
    """One user's top k, best first, leaving out the movies they rated unless INCLUDE_RATED."""
    if include_rated:
        scores, titles = index(tf.constant([user_id]), k=k)
    else:
        scores, titles = index.query_with_exclusions(tf.constant([user_id]), tf.constant([rated_titles(data, user_id)], tf.string), k=k)
    return ranking(titles[0].numpy(), scores[0].numpy())


def rated_titles(data: MovieLens, user_id: str) -> np.ndarray:
    """The distinct titles a user rated (none for a user the data lacks)."""
    user_row = np.flatnonzero(data.users == user_id.encode())
    return data.titles[np.unique(data.rating_titles[np.isin(data.rating_users, user_row)])]


def ranking(titles: np.ndarray, scores: np.ndarray) -> list[dict]:
    return [
        {"rank": rank, "title": title.decode("utf-8"), "score": round(float(score), 4)}
        for rank, (title, score) in enumerate(zip(titles, scores), start=1)
    ]


# Progress ---------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    """Stdout is for results; what the program is doing goes to stderr."""
    print(message, file=sys.stderr, flush=True)


class Heartbeat:
    """Says how far long work has got, at most every PROGRESS_EVERY_SECONDS; quick work says nothing."""

    def __init__(self):
        self.started_at = self.reported_at = time.perf_counter()

    def beat(self, message: str) -> None:
        now = time.perf_counter()
        if now - self.reported_at >= PROGRESS_EVERY_SECONDS:
            self.reported_at = now
            progress(f"{message} ({now - self.started_at:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    """`python recommend.py --user 42` runs the six steps above and prints the top 10. The command line,
    every option beyond the tutorial and a clear message for every failure are in beyond/cli.py, which
    is imported here and only here, so that `import recommend` is the tutorial alone."""
    from beyond import cli

    return cli.main(argv)


if __name__ == "__main__":
    status = main()
    # Python's exit would garbage-collect every object TensorFlow made, most of a second: skip it.
    import gc

    gc.freeze()
    sys.exit(status)
