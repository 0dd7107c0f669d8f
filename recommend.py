"""Recommend movies with a two-tower retrieval model: the TensorFlow Recommenders tutorial, runnable.

A retrieval model answers "which few of thousands of movies should this user see?" It learns a vector
for each user and each movie, so that a user's vector scores high (dot product) against the movies they
watched. The two towers never look at each other, so one matrix product scores every movie for a user:
that is what makes retrieval fast. The six steps, in order below:

    1. load_movielens       read MovieLens ratings and movie titles with TensorFlow Datasets
    2. build_vocabularies   map user ids and movie titles to embedding rows (StringLookup)
    3. build_model          the user tower, the movie tower and the retrieval task (tfrs.Model)
    4. train                fit both towers on the in-batch softmax (the quickstart's Adagrad)
    5. build_index          embed every movie once, for exact top-k (BruteForce)
    6. recommend            ask the index for one user's top k, leaving out movies they rated

The tutorial is TFRS's quickstart, whose settings are the defaults (Recipe, step 4), with the split of
its basic_retrieval tutorial, 80/20, for --evaluate. Where a step departs from their calls, a sentence at that
step says why; docs/from-the-tutorial.md puts each quickstart statement beside the line here doing its job.
The command line and all else beyond the tutorial live in beyond/, which calls these six steps.

    python recommend.py --user 42                  # train, then print user 42's top 10
    python recommend.py --user 42 --k 5 --json     # the same as one JSON document
    python recommend.py --evaluate                 # is the model better than "most popular"?
"""

import dataclasses
import os
import sys
import time

if __name__ == "__main__":  # run as a program: beyond/launch.py imports this file quietly, runs main()
    from beyond import launch

    launch.run_program()

# TensorFlow Recommenders is written for Keras 2. Since TensorFlow 2.16, `tf.keras` is Keras 3 unless
# this is set before TensorFlow is imported; then `tf.keras` is the tf-keras package (Keras 2).
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_recommenders as tfrs

# 1. Load ----------------------------------------------------------------------------------------------

RATING_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "movie_title": tf.io.FixedLenFeature([], tf.string),
    "user_rating": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),  # for the tuned recipe
}
MOVIE_FEATURES = {"movie_title": tf.io.FixedLenFeature([], tf.string)}
READ_CHUNK_SIZE = 1_000_000  # examples parsed at once: all of 100k in one go


@dataclasses.dataclass(frozen=True, eq=False)  # arrays do not compare as one value
class MovieLens:
    """MovieLens as numbers: each rating names its user and its title by their row in the sorted lists of
    distinct ones, so that even MovieLens 25M's 25 million ratings take 300 MB, not gigabytes of text:

        users           every user id that rated something, sorted (UTF-8 bytes, as TFDS stores text)
        titles          every movie title, sorted, each once
        rating_users    each rating's user: a row of `users` (int32)
        rating_titles   each rating's movie: a row of `titles` (int32)
        rating_stars    each rating's stars, 0.5 to 5 (float32; 0 where missing): the tuned recipe's weights
        movies          the movies dataset's title of each movie id, in its order: what the tutorial's
                        title vocabulary is adapted to (18 titles of 100k belong to two movie ids)
        catalogue_rows  the rows of `titles` somebody rated: the movies that can be recommended
        size            which MovieLens: "100k" (the tutorial's), "1m", "20m" or "25m"

    Read from those: `catalogue` (those titles as text), `user_ids` and `movie_titles` (each rating's as
    text: the tutorial's two features, for small data only) and `num_ratings`."""

    users: np.ndarray
    titles: np.ndarray
    rating_users: np.ndarray
    rating_titles: np.ndarray
    rating_stars: np.ndarray
    movies: np.ndarray
    catalogue_rows: np.ndarray
    size: str = "100k"
    user_ids = property(lambda self: self.users[self.rating_users])
    movie_titles = property(lambda self: self.titles[self.rating_titles])
    num_ratings = property(lambda self: len(self.rating_users))
    catalogue = property(lambda self: self.titles[self.catalogue_rows])


class DatasetUnreadable(Exception):
    """A prepared TFDS dataset could not be read; args: its name and the error."""


def load_movielens(data_dir: str | None = None, size: str = "100k") -> MovieLens:
    """TensorFlow Datasets gives the ratings and the movies; each is kept as numbers (see MovieLens). The
    command line reads MovieLens 1M and up with beyond/big_data.py instead: in chunks, and parsed once."""
    ratings_name, movies_name = f"movielens/{size}-ratings", f"movielens/{size}-movies"
    ratings = read_examples(ratings_name, RATING_FEATURES, data_dir, "ratings")
    movies = read_examples(movies_name, MOVIE_FEATURES, data_dir, "movies")["movie_title"]
    users, rating_users = np.unique(ratings["user_id"], return_inverse=True)
    titles = np.unique(movies)
    rating_titles = np.searchsorted(titles, ratings["movie_title"])
    # A title the movies lack (damaged data) finds another title's row, or the row past the end: b"".
    if not np.array_equal(np.append(titles, b"")[rating_titles], ratings["movie_title"]):
        raise DatasetUnreadable(ratings_name, ValueError(f"it rates titles that {movies_name} lacks"))
    rated = np.flatnonzero(np.bincount(rating_titles, minlength=len(titles))).astype(np.int32)
    rating_users, rating_titles = rating_users.astype(np.int32), rating_titles.astype(np.int32)
    return MovieLens(users, titles, rating_users, rating_titles, ratings["user_rating"], movies, rated, size)


def read_examples(name: str, features: dict, data_dir: str | None, noun: str) -> dict[str, np.ndarray]:
    """The features of every example of a TFDS dataset: what `tfds.load(name, split="train")` gives, in its
    order, as one array a feature. TFDS decodes one example at a time; parsing its TFRecord files a
    million examples per call is several times faster (docs/speed.md)."""
    chunks, count, heartbeat = [], 0, Heartbeat()  # a progress line every 10 s (end of the file)
    for chunk in read_features(name, features, data_dir):
        chunks.append({feature: values.numpy() for feature, values in chunk.items()})
        count += len(chunks[-1][next(iter(features))])
        heartbeat.beat(f"  read {count:,} {noun} of {name}")
    return {
        feature: np.concatenate([np.zeros(0, kind.dtype.as_numpy_dtype), *(part[feature] for part in chunks)])
        for feature, kind in features.items()
    }


def read_features(name: str, features: dict, data_dir: str | None = None):
    """Yields the features of every example of a TFDS dataset, READ_CHUNK_SIZE at a time, two at once."""
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

    The tutorial calls `adapt()`, a minute fed one example at a time; counting with numpy gives adapt's
    vocabulary row for row in milliseconds: most frequent first, ties by the token descending."""
    user_counts = np.bincount(data.rating_users, minlength=len(data.users))
    titles, title_counts = np.unique(data.movies, return_counts=True)
    users = data.users[np.lexsort((data.users, user_counts))[::-1]]
    titles = titles[np.lexsort((titles, title_counts))[::-1]]
    return (
        tf.keras.layers.StringLookup(mask_token=None, vocabulary=users),
        tf.keras.layers.StringLookup(mask_token=None, vocabulary=titles),
    )


# 3. Model ---------------------------------------------------------------------------------------------


class MovieLensModel(tfrs.Model):
    """Two towers and a retrieval task: the loss rewards a user's vector for pointing at their movies."""

    def __init__(self, user_model: tf.keras.Model, movie_model: tf.keras.Model, task: tfrs.tasks.Retrieval):
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        self.task = task
        # Keras logs only the last batch's loss; this adds up the epoch's (reset, as metrics are, each epoch).
        self.summed_loss = tf.keras.metrics.Sum(name="summed_loss")

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if not training:
            # Evaluating: the tutorial's own call. Its FactorizedTopK metric ranks the whole catalogue for
            # every rating, so it runs only here: computed while training, it took half the training time.
            user_embeddings = self.user_model(features["user_id"])
            movie_embeddings = self.movie_model(features["movie_title"])
            return self.task(user_embeddings, movie_embeddings)
        # Training: the tutorial returns the same self.task(user_embeddings, movie_embeddings), a softmax
        # over every rating's user against every rating's movie of the batch. training_loss computes it as
        # in_batch_softmax_loss, over the batch's distinct users and movies: the same loss and gradients,
        # many times faster (test_the_distinct_movie_softmax_is_retrievals_own_loss_with_the_same_gradients).
        loss = self.training_loss(features)
        self.summed_loss.update_state(loss)
        return loss

    # What training computes and is fed are methods, so that the tuned recipe's model (beyond/tuned.py)
    # can replace both in a subclass.
    def training_loss(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return in_batch_softmax_loss(
            self.user_model, self.movie_model, features["user_id"], features["movie_title"]
        )

    def features(self, data: MovieLens):
        """A function from a batch of rating numbers to what the model trains on (rating_features, step 4)."""
        return rating_features(data)


def in_batch_softmax_loss(user_model, movie_model, user_ids: tf.Tensor, movie_titles: tf.Tensor) -> tf.Tensor:
    """The loss `tfrs.tasks.Retrieval` computes by default, summed over the batch, many times faster.

    Retrieval scores every rating's user against every rating's movie (4096 x 4096) and asks a softmax to
    pick the rating's own movie: the batch's other movies are its negatives, to be scored below it. But a
    batch holds only about 1,000 distinct movies and 900 users, and copies of a movie score alike, so the
    logsumexp over the batch's movies equals one over its distinct movies m, each adding log count(m).
    The same loss and gradients, without the duplicated work.
    """
    users, user_rows = tf.unique(user_ids)
    movies, movie_columns = tf.unique(movie_titles)
    user_embeddings, movie_embeddings = user_model(users), movie_model(movies)
    counts = tf.math.unsorted_segment_sum(
        tf.ones_like(movie_columns, tf.float32), movie_columns, tf.size(movies)
    )
    logits = tf.matmul(user_embeddings, movie_embeddings, transpose_b=True) + tf.math.log(counts)
    own_products = tf.gather(user_embeddings, user_rows) * tf.gather(movie_embeddings, movie_columns)
    own_scores = tf.reduce_sum(own_products, axis=1)
    return tf.reduce_sum(tf.gather(tf.reduce_logsumexp(logits, axis=1), user_rows) - own_scores)


def tower(vocabulary: tf.keras.layers.StringLookup, embedding_dim: int, regularizer=None) -> tf.keras.Model:
    """A lookup, then an embedding. The explicit string Input fixes the input type up front: without it
    tf-keras guesses wrongly when the tower is first called inside `dataset.map`."""
    embedding = tf.keras.layers.Embedding(
        vocabulary.vocabulary_size(), embedding_dim, embeddings_regularizer=regularizer
    )
    return tf.keras.Sequential([tf.keras.Input(shape=(), dtype=tf.string), vocabulary, embedding])


TOP_KS = (1, 5, 10, 50, 100)  # top-k accuracy (FactorizedTopK): how often the rated movie is in the top k


def retrieval_task(movie_model: tf.keras.Model, catalogue: np.ndarray) -> tfrs.tasks.Retrieval:
    # The metric ranks against the catalogue, mapped through the tower whenever it is computed: each title
    # once, where the quickstart's movies list 18 titles twice (see build_index). Batches of 2,048 are
    # fewer steps than the quickstart's 128 for the same result.
    candidates = tf.data.Dataset.from_tensor_slices(catalogue).batch(2048).map(movie_model)
    return tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(candidates=candidates, ks=TOP_KS))


def build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue, embedding_dim=64) -> MovieLensModel:
    """Builds the user and movie towers, embedding_dim numbers a vector, and joins them with a retrieval
    task."""
    user_model = tower(user_ids_vocabulary, embedding_dim)
    movie_model = tower(movie_titles_vocabulary, embedding_dim)
    return MovieLensModel(user_model, movie_model, retrieval_task(movie_model, catalogue))


# 4. Train ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the towers are built and trained. The defaults are the TFRS quickstart's."""

    embedding_dim: int = 64  # numbers per user and per movie, passed to build_model
    # Adagrad shrinks each weight's steps as its squared gradients add up, so rarely seen users and
    # movies still learn quickly while popular ones settle: that is why the quickstart's 0.5 is stable.
    learning_rate: float = 0.5
    batch_size: int = 4096  # each rating's negatives are the other movies of its batch
    epochs: int = 3
    shuffle_each_epoch: bool = False  # the tutorial feeds the ratings in the same order every epoch
    # "adagrad" or "adam", the Keras optimizers train() knows. beyond/recipes.py's tuned recipe may name
    # its own way ("als"); it then trains its model itself, not through train().
    optimizer: str = "adagrad"


OPTIMIZERS = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam}
# Shuffling holds each rating number as a tensor of its own, about 200 bytes: 2 million hold 100k and 1M,
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
    model.compile(optimizer=OPTIMIZERS[recipe.optimizer](learning_rate=recipe.learning_rate))
    batches = without_autotuning(batches.prefetch(tf.data.AUTOTUNE))
    model.fit(batches, epochs=recipe.epochs, verbose=0, callbacks=list(callbacks))


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """DATASET with tf.data's autotuning off: at the end of each epoch of a few seconds or more, fit() sat
    idle for seconds, waiting on autotuning's thread as it let go of the iterator (docs/speed.md)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


# 5. Index ---------------------------------------------------------------------------------------------


def build_index(model: MovieLensModel, data: MovieLens) -> tfrs.layers.factorized_top_k.BruteForce:
    """Embeds each title of the catalogue once and indexes the embeddings for exact (brute-force) top-k.

    The tutorial indexes its movies dataset, 1,682 movie ids: a title of two ids would take two of the
    top k's places. The catalogue holds each rated title once (1,664 of 100k), sorted, and is already one
    tensor, so `index()` takes it whole where `index_from_dataset` would gather it from batches. Top-k
    keeps the earlier of equal scores, so ties go in the catalogue's order: its titles' bytes, sorted."""
    index = tfrs.layers.factorized_top_k.BruteForce(model.user_model)
    index.index(candidates=model.movie_model(data.catalogue), identifiers=tf.constant(data.catalogue))
    return index


# 6. Recommend -----------------------------------------------------------------------------------------


def recommend(index, data: MovieLens, user_id: str, k: int = 10, include_rated: bool = False) -> list[dict]:
    """One user's top k, best first: 10 by default, a cut-off --evaluate scores (quickstart: 3).
    The quickstart's list starts with films the user rated; BruteForce's query_with_exclusions leaves
    them out here, unless `include_rated`. The user must be in the data and k at most the movies left:
    the command line checks both first."""
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
    """The command line (beyond/cli.py), imported here and only here, so that `import recommend` is the
    tutorial alone. For `python recommend.py --user 42` it runs the six steps above in order and prints
    the top 10: step 1 through a checked download (and, for 1M and up, a chunked reader), steps 3 and 4
    as the chosen recipe builds and trains (build_model and train above, for the tutorial's), with
    progress lines and a clear message for every failure. Its other questions (--evaluate, --liked,
    --similar-to, --load-dir) reuse the same steps."""
    from beyond import cli

    return cli.main(argv)
