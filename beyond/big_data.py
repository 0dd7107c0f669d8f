"""What MovieLens 1M, 20M and 25M need beyond the tutorial: memory that stays bounded.

The core keeps each rating as three numbers (see recommend.MovieLens), so 25 million ratings take 300
MB where Python strings would take 4 GB. But its loader holds every rating's text at once on the way.
This module adds what the big sizes need:

    1. load_movielens: the core's numbers, read a million ratings at a time, each chunk made into numbers
       before the next is read (the command line's loader for 1M and up)
    2. each user's rated titles as one array of catalogue rows with offsets: 4 bytes a rating
    3. distinct numbers by sorting, which is many times faster than np.unique on 25 million of them
    4. an estimate of the memory training needs, and a refusal, before training, of what cannot fit

Try it with the synthetic MovieLens 25M that benchmarks/synthetic_movielens.py writes:

    python recommend.py --dataset 25m --data-dir synthetic-25m --user 1 --timings
"""

import contextlib
import dataclasses
import functools
import os

import numpy as np
import tensorflow as tf

import recommend
from beyond.guards import UsageError


def load_movielens(data_dir: str | None, size: str) -> recommend.MovieLens:
    """What recommend.load_movielens gives, array for array, without ever holding every rating's text:
    the ratings are parsed a million at a time, and each chunk's users and titles become numbers (only its
    distinct ones as Python objects, which tf.unique finds) before the next chunk is read."""
    ratings_name, movies_name = f"movielens/{size}-ratings", f"movielens/{size}-movies"
    movies = recommend.read_examples(movies_name, recommend.MOVIE_FEATURES, data_dir, "movies")["movie_title"]
    titles = np.unique(movies)
    user_numbers = {}  # each user id's number, in the order the ratings first name them
    rating_users, rating_titles = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)]
    rating_stars, heartbeat = [np.zeros(0, np.float32)], recommend.Heartbeat()
    for chunk in recommend.read_features(ratings_name, recommend.RATING_FEATURES, data_dir):
        distinct, rows = (tensor.numpy() for tensor in tf.unique(chunk["user_id"]))
        numbers = [user_numbers.setdefault(user, len(user_numbers)) for user in distinct.tolist()]
        rating_users.append(np.array(numbers, np.int32)[rows])
        distinct, rows = (tensor.numpy() for tensor in tf.unique(chunk["movie_title"]))
        found = np.searchsorted(titles, distinct)
        if not np.array_equal(np.append(titles, b"")[found], distinct):  # as the core checks
            raise recommend.DatasetUnreadable(
                ratings_name, ValueError(f"it rates titles that {movies_name} lacks")
            )
        rating_titles.append(found.astype(np.int32)[rows])
        rating_stars.append(chunk["user_rating"].numpy())
        heartbeat.beat(f"  read {sum(map(len, rating_stars)):,} ratings of {ratings_name}")
    # Users were numbered as first met; renumber them by sorted id, as the core numbers them.
    users = np.array(sorted(user_numbers), dtype=object)
    renumbered = np.empty(len(users), np.int32)
    renumbered[[user_numbers[user] for user in users]] = np.arange(len(users), dtype=np.int32)
    rating_titles = np.concatenate(rating_titles)
    rated = np.flatnonzero(np.bincount(rating_titles, minlength=len(titles))).astype(np.int32)
    rating_users, rating_stars = renumbered[np.concatenate(rating_users)], np.concatenate(rating_stars)
    return recommend.MovieLens(users, titles, rating_users, rating_titles, rating_stars, movies, rated, size)


def sorted_distinct(numbers: np.ndarray) -> np.ndarray:
    """What np.unique(numbers) gives, by sorting, which is many times faster on 25 million numbers
    (docs/bigger-data.md)."""
    numbers = np.sort(numbers)
    first = np.ones(len(numbers), bool)
    np.not_equal(numbers[1:], numbers[:-1], out=first[1:])
    return numbers[first]


def catalogue_rows(data: recommend.MovieLens) -> np.ndarray:
    """For each rating, its title's row in the catalogue: looked up in a table of every title's row, one
    step a rating, rather than searched for."""
    row_of_title = np.zeros(len(data.titles), np.int32)
    row_of_title[data.catalogue_rows] = np.arange(len(data.catalogue_rows), dtype=np.int32)
    return row_of_title[data.rating_titles]


# The command line, the saved recommender and each seed's evaluation all ask for the same datasets' lists,
# and on 25M each takes seconds to sort: made once per dataset (MovieLens compares by identity).
@functools.lru_cache(maxsize=4)
def rated_by_user(data: recommend.MovieLens) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct rated titles as catalogue rows: (offsets, rows), where user u's are
    rows[offsets[u]:offsets[u + 1]], sorted. A rating given twice counts once."""
    columns = len(data.catalogue_rows)
    pairs = sorted_distinct(data.rating_users.astype(np.int64) * columns + catalogue_rows(data))
    offsets = np.searchsorted(pairs // columns, np.arange(len(data.users) + 1))
    return offsets, (pairs % columns).astype(np.int32)


def ratings_per_title(data: recommend.MovieLens) -> np.ndarray:
    """How many ratings each catalogue title has."""
    return np.bincount(data.rating_titles, minlength=len(data.titles))[data.catalogue_rows]


def rated_titles_per_user(data: recommend.MovieLens) -> dict[str, int]:
    """How many distinct titles each user has rated, by user id."""
    offsets, _ = rated_by_user(data)
    return {user.decode(): int(count) for user, count in zip(data.users, np.diff(offsets))}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What the memory training needs grows with, besides the recipe's own sizes: the data's counts.
    All 0 before any data is read, which makes every estimate the least the recipe's sizes need."""

    users: int = 0
    movies: int = 0
    ratings: int = 0
    most_ratings_of_one: int = 0  # the most ratings of any one user or movie


def sizes_of(data: recommend.MovieLens) -> Sizes:
    most = max(np.bincount(data.rating_users).max(initial=0), np.bincount(data.rating_titles).max(initial=0))
    return Sizes(len(data.users), len(data.catalogue), data.num_ratings, int(most))


FLOAT_BYTES = 4
# TensorFlow's own working memory as it traces a training step and runs it, whatever the sizes.
RUNTIME_BYTES = 64 * 2**20
# Each rating in training: its user's and its title's rows, as TensorFlow constants the batches are cut
# from (rating_features).
FED_BYTES_PER_RATING = 8
# A shuffle buffer holds each rating number as a tensor of its own, about this many bytes with its keep.
SHUFFLED_BYTES_PER_RATING = 200


def gradient_training_bytes(
    sizes: Sizes,
    embedding_dim: int,
    batch_size: int,
    optimizer_slots: int,
    shuffled: bool,
    implicit_als: bool,
) -> int:
    """A generous estimate of what training by gradient steps (Keras's fit) holds at once, in bytes, beside
    RUNTIME_BYTES (see recipes.TutorialRecipe.memory_bytes).

    The embedding tables (one row per user and per movie, plus each vocabulary's unknown row) come
    2 + OPTIMIZER_SLOTS times over: the weights, a gradient as large, and the optimizer's state (Adagrad
    keeps one number per weight, Adam two). A batch adds its gathered vectors, kept a few times for the
    loss and its gradient, and the softmax its scores, distinct users x distinct movies: never more than
    users x catalogue, however large the batch. Implicit ALS's loss has no such matrix, but embeds the
    whole catalogue and its d x d Gram matrix at every step, feeds each rating's weight, share and
    unrated weight, and holds where each user's L2 pulls.
    """
    d = embedding_dim
    tables = (sizes.users + 1 + sizes.movies + 1) * d * FLOAT_BYTES * (2 + optimizer_slots)
    batch = min(batch_size, sizes.ratings)
    need = tables + 8 * batch * d * FLOAT_BYTES + FED_BYTES_PER_RATING * sizes.ratings
    if shuffled and sizes.ratings > batch_size:
        need += SHUFFLED_BYTES_PER_RATING * min(sizes.ratings, recommend.SHUFFLE_BUFFER_SIZE)
    if implicit_als:
        need += 3 * (sizes.movies + 1) * d * FLOAT_BYTES + 3 * d * d * FLOAT_BYTES  # catalogue, G
        # Each rating's weight, share and unrated weight, the weights made, and its two table rows while
        # each row's L2 is counted; and those L2s and unrated weights, a few numbers a row.
        need += 6 * FLOAT_BYTES * sizes.ratings + 3 * FLOAT_BYTES * (sizes.users + sizes.movies + 2)
        # Where each user's L2 pulls (tuned.rated_means_matrix): numpy's 64-bit rows and values while the
        # sparse matrix is made (44 bytes a rating), the matrix and its sorted copy (20 each), and the
        # target table it gives at each step, with the difference the L2 squares.
        need += (44 + 2 * 20) * sizes.ratings + 2 * (sizes.users + 1) * d * FLOAT_BYTES
    else:
        need += 4 * min(batch, sizes.users) * min(batch, sizes.movies) * FLOAT_BYTES
    return need


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


def check_memory(recipe, sizes: Sizes = Sizes()) -> None:
    """Refuses, before any training, sizes that cannot fit in this machine's memory: before any data is
    read, the recipe's own sizes (Sizes() counts no data), and once it is, the two together."""
    need = recipe.memory_bytes(sizes)
    available = available_memory_bytes()
    if available is not None and need > available:
        whatever = "" if sizes.ratings else ", whatever the data"
        raise UsageError(
            f"{recipe.describe_sizes(sizes.ratings)} need about {need / 2**30:.1f} GiB of memory to train"
            f"{whatever}, more than the {available / 2**30:.1f} GiB available here; choose a smaller "
            f"{recipe.sizes_to_shrink()}"
        )
