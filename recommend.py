"""Recommend movies with a two-tower retrieval model: the TensorFlow Recommenders tutorial, runnable.

A retrieval model answers "which few of thousands of movies should this user see?" It learns one
embedding per user and one per movie so that a user's vector scores high (dot product) against the
movies they watched. Because the two towers never look at each other, every movie can be scored for
a user with one matrix product, which is what makes retrieval fast. The six steps, in order below:

    1. load_movielens       read MovieLens ratings and movie titles with TensorFlow Datasets
    2. build_vocabularies   map user ids and movie titles to embedding rows (StringLookup)
    3. build_model          the user tower, the movie tower and the retrieval task (tfrs.Model)
    4. train                fit both towers with Adagrad on the in-batch softmax
    5. build_index          score every movie for a user (BruteForce)
    6. recommend            ask the index for one user's top k, leaving out movies they rated

Where a step departs from the tutorial's own calls, for speed, a sentence there says why. All that goes
beyond the tutorial lives in the beyond/ package: see docs/architecture.md.

    python recommend.py --user 42                  # train, then print user 42's top 10
    python recommend.py --user 42 --k 5 --json     # the same as one JSON document
    python recommend.py --evaluate                 # is the model better than "most popular"?
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time

# TensorFlow Recommenders is written for Keras 2. Since TensorFlow 2.16, `tf.keras` is Keras 3 unless
# this is set before TensorFlow is imported; then `tf.keras` is the tf-keras package (Keras 2).
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
STARTED_AT = time.perf_counter()
# TensorFlow's C++ core logs a few lines as it loads ("Could not find cuda drivers") that ignore
# TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442): only pointing stderr elsewhere silences them.
saved_stderr = os.dup(2)
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
try:
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds
    import tensorflow_recommenders as tfrs
except KeyboardInterrupt:  # Ctrl-C in the seconds the import takes: end as main() would
    os.dup2(saved_stderr, 2)
    if __name__ == "__main__":
        print("recommend.py: interrupted", file=sys.stderr)
        sys.exit(130)
    raise
finally:
    os.dup2(saved_stderr, 2)
IMPORTED_AT = time.perf_counter()


# 1. Load ----------------------------------------------------------------------------------------------

RATING_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "movie_title": tf.io.FixedLenFeature([], tf.string),
    "user_rating": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),  # for the tuned recipe
}
MOVIE_FEATURES = {"movie_title": tf.io.FixedLenFeature([], tf.string)}
READ_CHUNK_SIZE = 1_000_000  # ratings parsed at once: all of 100k in one go, and bounded memory for 25M


@dataclasses.dataclass(frozen=True, eq=False)  # arrays do not compare as one value
class MovieLens:
    """MovieLens as numbers: a rating is its user's row in `users`, its title's row in `titles`, and its
    stars. Each id and title is kept once, so 25 million ratings take 300 MB, not gigabytes of strings."""

    users: np.ndarray  # every user id that rated something, sorted (UTF-8 bytes, as TFDS stores text)
    titles: np.ndarray  # every distinct title of the movies, sorted
    rating_users: np.ndarray  # int32, one per rating
    rating_titles: np.ndarray  # int32, one per rating
    rating_stars: np.ndarray  # float32, one per rating
    movies: np.ndarray  # each movie id's title; 18 titles of 100k have two ids, which share one embedding
    catalogue_titles: np.ndarray  # the rows of `titles` somebody rated: what can be recommended
    size: str = "100k"
    user_ids = property(lambda self: self.users[self.rating_users])  # as text: for small data only
    movie_titles = property(lambda self: self.titles[self.rating_titles])
    num_ratings = property(lambda self: len(self.rating_users))

    catalogue = functools.cached_property(lambda self: self.titles[self.catalogue_titles])


class DatasetUnreadable(Exception):
    """A prepared TFDS dataset could not be read; args: its name and the error."""


def load_movielens(data_dir: str | None = None, size: str = "100k") -> MovieLens:
    """Reads who rated which movie with how many stars, and every movie's title, from TensorFlow Datasets."""
    ratings_name, movies_name = f"movielens/{size}-ratings", f"movielens/{size}-movies"
    movies = [chunk["movie_title"].numpy() for chunk in read_features(movies_name, MOVIE_FEATURES, data_dir)]
    movies = np.concatenate([np.zeros(0, object), *movies])
    titles, users, heartbeat = np.unique(movies), {}, Heartbeat()
    known_titles = set(titles.tolist())
    rating_users, rating_titles, stars = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)], []
    for chunk in read_features(ratings_name, RATING_FEATURES, data_dir):
        distinct, rows = tf.unique(chunk["user_id"])  # only a chunk's distinct ids become Python objects
        numbers = [users.setdefault(user, len(users)) for user in distinct.numpy().tolist()]
        rating_users.append(np.array(numbers, np.int32)[rows.numpy()])
        distinct, rows = (tensor.numpy() for tensor in tf.unique(chunk["movie_title"]))
        if set(distinct.tolist()) - known_titles:  # a rating of a title the movies lack: damaged data
            raise DatasetUnreadable(ratings_name, ValueError(f"it rates titles that {movies_name} lacks"))
        rating_titles.append(np.searchsorted(titles, distinct)[rows])
        stars.append(chunk["user_rating"].numpy())
        heartbeat.beat(f"  read {sum(map(len, stars)):,} ratings of {ratings_name}")
    # Users were numbered as first seen; renumber them by sorted id, as the titles are.
    ids = np.array(list(users), dtype=object)
    order = np.argsort(ids)
    rating_users = np.argsort(order).astype(np.int32)[np.concatenate(rating_users)]
    rating_titles = np.concatenate(rating_titles).astype(np.int32)
    rated = np.flatnonzero(np.bincount(rating_titles, minlength=len(titles))).astype(np.int32)
    stars = np.concatenate([np.zeros(0, np.float32), *stars])
    return MovieLens(ids[order], titles, rating_users, rating_titles, stars, movies, rated, size)


def read_features(name: str, features: dict, data_dir: str | None = None):
    """Yields FEATURES of every example of a TFDS dataset, a chunk at a time: what `tfds.load(name,
    split="train")` gives, in the same order. TFDS decodes one example at a time; parsing its TFRecord
    files a million examples per call is several times faster (docs/speed.md)."""
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
    """Maps each user id and movie title to a row of its embedding table. Row 0 is for ids never seen (an
    untrained row, not an error); `mask_token=None` means no row is kept for padding.

    The tutorial calls `adapt()`, which takes about a minute fed one example at a time. Counting with numpy
    gives the same vocabulary in milliseconds: most frequent first, ties by the token descending."""
    user_counts = np.bincount(data.rating_users, minlength=len(data.users))
    movie_titles, movie_counts = np.unique(data.movies, return_counts=True)
    return (
        tf.keras.layers.StringLookup(mask_token=None, vocabulary=by_frequency(data.users, user_counts)),
        tf.keras.layers.StringLookup(mask_token=None, vocabulary=by_frequency(movie_titles, movie_counts)),
    )


def by_frequency(distinct: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return distinct[np.lexsort((distinct, counts))[::-1]]


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
        # Evaluating: the tutorial's call. Its FactorizedTopK metric scores the whole catalogue for every
        # rating, so it runs only here: computed while training, it took half the training time.
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        return self.task(user_embeddings, movie_embeddings)

    # The training loss and what it is fed are methods so that the tuned recipe (beyond/tuned.py) can
    # replace both in a subclass.
    def training_loss(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return in_batch_softmax_loss(
            self.user_model, self.movie_model, features["user_id"], features["movie_title"]
        )

    def features(self, data: MovieLens):
        """What the model trains on, for a batch of rating numbers (see rating_features)."""
        return rating_features(data)


def in_batch_softmax_loss(user_model, movie_model, user_ids: tf.Tensor, movie_titles: tf.Tensor) -> tf.Tensor:
    """The loss `tfrs.tasks.Retrieval` computes by default, summed over the batch, many times faster.

    Retrieval scores every rating's user against every rating's movie (4096 x 4096) and asks a softmax to
    pick the rating's own movie. But a batch holds only about 1,000 distinct movies and 900 users, and
    copies of a movie score alike, so the logsumexp over the batch's movies equals one over its distinct
    movies m, each adding log count(m). The same loss and gradients, without the duplicated work.
    """
    users, user_rows = tf.unique(user_ids)
    movies, movie_columns = tf.unique(movie_titles)
    user_embeddings, movie_embeddings = user_model(users), movie_model(movies)
    counts = tf.math.unsorted_segment_sum(
        tf.ones_like(movie_columns, tf.float32), movie_columns, tf.size(movies)
    )
    logits = tf.matmul(user_embeddings, movie_embeddings, transpose_b=True) + tf.math.log(counts)
    own_embeddings = tf.gather(user_embeddings, user_rows) * tf.gather(movie_embeddings, movie_columns)
    own_scores = tf.reduce_sum(own_embeddings, axis=1)
    return tf.reduce_sum(tf.gather(tf.reduce_logsumexp(logits, axis=1), user_rows) - own_scores)


def tower(vocabulary: tf.keras.layers.StringLookup, embedding_dim: int, regularizer=None) -> tf.keras.Model:
    """A lookup, then an embedding. The explicit string Input fixes the input type up front: without it
    tf-keras guesses wrongly when the tower is first called inside `dataset.map`."""
    embedding = tf.keras.layers.Embedding(
        vocabulary.vocabulary_size(), embedding_dim, embeddings_regularizer=regularizer
    )
    return tf.keras.Sequential([tf.keras.Input(shape=(), dtype=tf.string), vocabulary, embedding])


def retrieval_task(movie_model: tf.keras.Model, catalogue: np.ndarray) -> tfrs.tasks.Retrieval:
    # The metric ranks against the whole catalogue, mapped through the tower whenever it is computed.
    candidates = tf.data.Dataset.from_tensor_slices(catalogue).batch(2048).map(movie_model)
    return tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(candidates=candidates, ks=TOP_KS))


TOP_KS = (1, 5, 10, 50, 100)  # the cut-offs of the tutorial's top-k accuracy


def build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue, recipe: Recipe) -> MovieLensModel:
    """Builds the user and movie towers and joins them with a retrieval task."""
    user_model = tower(user_ids_vocabulary, recipe.embedding_dim)
    movie_model = tower(movie_titles_vocabulary, recipe.embedding_dim)
    return MovieLensModel(user_model, movie_model, retrieval_task(movie_model, catalogue))


# 4. Train ---------------------------------------------------------------------------------------------


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
    optimizer: str = "adagrad"  # or "adam"


TUTORIAL = Recipe()
# Shuffling holds its buffer in memory, about 200 bytes a rating: 2 million hold all of 100k and 1M,
# and a window of 20M and 25M, whose TFDS files are in a random order already.
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
    """Fits both towers with the recipe's optimizer. `callbacks` are Keras's: beyond/guards.py passes the
    progress lines that stand in for fit's own progress bar, which would print on stdout."""
    # The dataset holds rating numbers, turned into text a batch at a time; shuffled, they take the same
    # order the ratings themselves would.
    ratings = tf.data.Dataset.range(data.num_ratings)
    one_batch = data.num_ratings <= recipe.batch_size
    if recipe.shuffle_each_epoch and not one_batch:
        buffer_size = min(data.num_ratings, SHUFFLE_BUFFER_SIZE)
        ratings = ratings.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
    batches = ratings.batch(recipe.batch_size).map(model.features(data))
    if one_batch:  # every pass is the same batch, in any order: made once
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
    """One user's top k, best first, leaving out the movies they rated unless `include_rated`. The user
    must be in the data and k at most the movies left; the command line checks both first."""
    if include_rated:
        scores, titles = index(tf.constant([user_id]), k=k)
    else:
        rated = tf.constant([rated_titles(data, user_id)], tf.string)
        scores, titles = index.query_with_exclusions(tf.constant([user_id]), rated, k=k)
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


# Progress and the command line ------------------------------------------------------------------------

PROGRESS_EVERY_SECONDS = 10


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
    """`python recommend.py --user 42`: beyond/cli.py's run_recommend calls the six steps above in order
    and prints the top 10, adding only what an option asks for (a seed, saving, a log). The options and a
    clear message for every failure live there, imported here and only here, so that `import recommend`
    is the tutorial alone."""
    from beyond import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.modules["recommend"] = sys.modules[__name__]  # so that beyond/ imports this module, not a second copy
    status = main()
    # Python's exit would garbage-collect every object TensorFlow made, most of a second: skip that.
    import gc

    gc.freeze()
    sys.exit(status)
