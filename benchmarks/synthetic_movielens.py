"""A synthetic MovieLens, shaped like the real 25M, written as a prepared TensorFlow Datasets copy.

The real MovieLens 25M may not be redistributed, and no machine that builds this project reaches the
internet. This invents a dataset of the same shape, so that recommend.py's memory and time on 25 million
ratings can be measured anywhere:

1. Users rate at least 20 movies each, and a few rate thousands (a Pareto tail), as in MovieLens.
2. Movie popularity follows a power law: the most rated movie has 0.34% of all ratings (0.33% in
   MovieLens 25M), and 5.4% of the movies are never rated, as in MovieLens 25M.
3. No user rates the same movie twice.
   With --taste, users and movies also have hidden vectors, and a user's movies are drawn from
   popularity x exp(taste x user . movie): planted structure a recommender can find, and most-popular
   cannot. Without it (the default) popularity alone decides.
4. The examples carry every feature of TFDS's movielens/25m-ratings (genres, ids, title, timestamp,
   rating), are stored in a random order, as TFDS stores them, and are described by TFDS's own
   DatasetInfo, so `tfds.builder("movielens/25m-ratings", data_dir=...)` reads them as the real thing.

Generate it (about 4 minutes and 4.4 GB of disk), then measure a run on it:

    python benchmarks/synthetic_movielens.py --data-dir /tmp/synthetic-25m
    /usr/bin/time -v python recommend.py --dataset 25m --data-dir /tmp/synthetic-25m --epochs 1 \\
        --user 1 --timings

Smaller ones, for a quick look: --ratings 1000000 --users 6500 --movies 2500. One shaped like MovieLens
1M, with planted tastes, to measure quality on (docs/bigger-data.md):

    python benchmarks/synthetic_movielens.py --data-dir /tmp/planted-1m --size 1m --ratings 1000209 \
        --users 6040 --movies 3706 --taste 2
"""

import argparse
import itertools
import os
import pathlib
import struct
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import recommend  # noqa: E402

# MovieLens 25M's own counts (its README): 25,000,095 ratings by 162,541 users of 62,423 movies.
MOVIELENS_25M = {"ratings": 25_000_095, "users": 162_541, "movies": 62_423}
MIN_RATINGS_PER_USER = 20  # GroupLens kept only users with at least 20 ratings
SHARD_SIZE = 1_000_000  # examples per TFRecord file: about 150 MB each
UNRATED_SHARE = 0.054
HALF_STARS = np.arange(1, 11) / 2  # the ratings MovieLens 25M allows: 0.5 to 5 stars


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ratings < args.users * MIN_RATINGS_PER_USER or args.ratings > args.users * args.movies // 2:
        print(
            f"error: --ratings must be between {MIN_RATINGS_PER_USER} per user and half of every "
            "user rating every movie",
            file=sys.stderr,
        )
        return 2
    names = [f"movielens/{args.size}-ratings", f"movielens/{args.size}-movies"]
    for name in names:
        folder = pathlib.Path(tfds.builder(name, data_dir=str(args.data_dir)).data_dir)
        if folder.exists():
            print(f"error: {folder} already exists; delete it or choose another --data-dir", file=sys.stderr)
            return 2
    rng = np.random.default_rng(args.seed)
    users, movies = invent_ratings(rng, args.ratings, args.users, args.movies, args.taste, args.taste_dim)
    genres = [rng.choice(21, size=rng.integers(1, 4), replace=False) for _ in range(args.movies)]
    years = rng.integers(1920, 2020, size=args.movies)
    titles = [
        f"Synthetic Movie {movie} ({year})".encode() for movie, year in zip(range(1, args.movies + 1), years)
    ]
    movie_parts = [
        feature_entry("movie_genres", int64_feature(sorted(int(genre) for genre in genres[movie])))
        + feature_entry("movie_id", bytes_feature(str(movie + 1).encode()))
        + feature_entry("movie_title", bytes_feature(titles[movie]))
        for movie in range(args.movies)
    ]
    user_parts = [
        feature_entry("user_id", bytes_feature(str(user + 1).encode())) for user in range(args.users)
    ]
    rating_parts = [feature_entry("user_rating", float_feature(stars)) for stars in HALF_STARS]
    # Every rating gets a timestamp from a pool of ten thousand between 1995 and 2019: recommend.py never
    # reads them, and encoding a pool once keeps the writing fast.
    time_parts = [
        feature_entry("timestamp", int64_feature([int(seconds)]))
        for seconds in rng.integers(789_000_000, 1_574_000_000, size=10_000)
    ]
    rating_stars = rng.integers(0, len(HALF_STARS), size=len(users))
    rating_times = rng.integers(0, len(time_parts), size=len(users))

    def rating_examples(start: int, stop: int):
        for user, movie, stars, seconds in zip(
            users[start:stop].tolist(),
            movies[start:stop].tolist(),
            rating_stars[start:stop].tolist(),
            rating_times[start:stop].tolist(),
        ):
            yield example(movie_parts[movie] + user_parts[user] + rating_parts[stars] + time_parts[seconds])

    write_prepared(args.data_dir, names[0], len(users), rating_examples)
    write_prepared(
        args.data_dir,
        names[1],
        args.movies,
        lambda start, stop: (example(movie_parts[movie]) for movie in range(start, stop)),
    )
    rated = np.bincount(movies, minlength=args.movies)
    print(
        f"{len(users):,} ratings by {args.users:,} users of {args.movies:,} movies "
        f"({np.count_nonzero(rated):,} rated; the most rated has {rated.max() / len(users):.2%} of the "
        f"ratings) in {args.data_dir}",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, type=pathlib.Path, help="TFDS data folder to write to")
    parser.add_argument(
        "--size",
        default="25m",
        choices=["1m", "20m", "25m"],
        help="which TFDS config to imitate (default %(default)s)",
    )
    parser.add_argument("--ratings", type=int, default=MOVIELENS_25M["ratings"], help="default %(default)s")
    parser.add_argument("--users", type=int, default=MOVIELENS_25M["users"], help="default %(default)s")
    parser.add_argument("--movies", type=int, default=MOVIELENS_25M["movies"], help="default %(default)s")
    parser.add_argument("--seed", type=int, default=25, help="default %(default)s")
    parser.add_argument(
        "--taste",
        type=float,
        default=0.0,
        help="how strongly hidden tastes steer each user's choices: 0, popularity alone; 2, strongly. "
        "It scores every user against every movie: seconds for a 1M-shaped set, about 11 minutes for 25M "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--taste-dim", type=int, default=16, help="numbers in each hidden taste vector (default %(default)s)"
    )
    return parser


def invent_ratings(
    rng: np.random.Generator,
    count: int,
    num_users: int,
    num_movies: int,
    taste: float = 0.0,
    taste_dim: int = 16,
):
    """(user, movie) index pairs, COUNT of them, no pair twice, in a random order."""
    # Each user's number of ratings: the minimum plus a Pareto-distributed share of the rest, capped at
    # half the catalogue. Rounding down leaves ratings over; users below the cap take them one by one.
    weights = rng.pareto(1.5, size=num_users)
    extra = count - MIN_RATINGS_PER_USER * num_users
    per_user = MIN_RATINGS_PER_USER + np.minimum(
        np.floor(extra * weights / weights.sum()), num_movies // 2 - MIN_RATINGS_PER_USER
    )
    per_user = per_user.astype(np.int64)
    while per_user.sum() < count:
        room = np.flatnonzero(per_user < num_movies // 2)
        per_user[rng.choice(room, size=min(len(room), count - per_user.sum()), replace=False)] += 1
    users = np.repeat(np.arange(num_users, dtype=np.int32), per_user)
    # Popularity by rank r: proportional to 1 / (r + 40) ** 1.25, close to MovieLens 25M's head and long
    # tail. Ranks go to movie ids at random.
    popularity = 1.0 / (np.arange(num_movies) + 40.0) ** 1.25
    popularity = popularity[rng.permutation(num_movies)]
    # MovieLens 25M lists 3,376 movies (5.4%) that nobody rated; so does this one.
    popularity[rng.random(num_movies) < UNRATED_SHARE] = 0
    popularity /= popularity.sum()
    if taste:
        # Standard normal hidden vectors, the users' scaled to a length of about 1.
        user_tastes = rng.normal(size=(num_users, taste_dim)) / np.sqrt(taste_dim)
        movie_tastes = rng.normal(size=(num_movies, taste_dim))
        movies = draw_by_taste(rng, per_user, popularity, taste * user_tastes, movie_tastes)
        order = rng.permutation(count)
        return users[order], movies[order]
    movies = rng.choice(num_movies, size=count, p=popularity).astype(np.int32)
    # A user drawing the same movie twice draws again, until no pair repeats. Popularity alone would
    # rarely find the movies left to a user who rates thousands, so after three rounds draws are uniform.
    for attempt in itertools.count():
        keys = users.astype(np.int64) * num_movies + movies
        _, first = np.unique(keys, return_index=True)
        repeated = np.ones(count, dtype=bool)
        repeated[first] = False
        if not repeated.any():
            break
        weights = popularity if attempt < 3 else (popularity > 0) / np.count_nonzero(popularity)
        movies[repeated] = rng.choice(num_movies, size=int(repeated.sum()), p=weights)
    order = rng.permutation(count)
    return users[order], movies[order]


def draw_by_taste(rng, per_user: np.ndarray, popularity: np.ndarray, user_tastes, movie_tastes) -> np.ndarray:
    """Each user's movies, PER_USER[u] of them without repeats, drawn from popularity x exp(user . movie)
    for the rows of USER_TASTES and MOVIE_TASTES. Adding Gumbel noise to the log weights and keeping each
    user's top ones draws exactly so (the Gumbel top-k trick), a thousand users at a time."""
    with np.errstate(divide="ignore"):  # a movie nobody rates has popularity 0: a key of -inf
        log_popularity = np.log(popularity)
    movies, heartbeat = [], recommend.Heartbeat()  # 25M's draw takes minutes
    for first in range(0, len(per_user), 1000):
        users = slice(first, first + 1000)
        keys = log_popularity + user_tastes[users] @ movie_tastes.T
        keys += rng.gumbel(size=keys.shape)
        # Only the block's longest list is ordered, not the whole catalogue: on 25M's 62,423 movies a full
        # sort took seconds a block. Each row is copied out, so that the block's arrays can be freed.
        most = int(per_user[users].max())
        best = np.argpartition(keys, -most, axis=1)[:, -most:]
        best_first = np.take_along_axis(best, np.argsort(-np.take_along_axis(keys, best, 1), axis=1), 1)
        movies.append(np.concatenate([row[:count] for row, count in zip(best_first, per_user[users])]))
        heartbeat.beat(f"tastes: {min(users.stop, len(per_user)):,} of {len(per_user):,} users' movies drawn")
    return np.concatenate(movies).astype(np.int32)


def write_prepared(data_dir: pathlib.Path, name: str, count: int, examples) -> None:
    """Writes COUNT serialized examples, EXAMPLES(start, stop) at a time, as the prepared TFDS dataset NAME."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    folder = pathlib.Path(builder.data_dir)
    folder.mkdir(parents=True)
    num_shards = max(1, -(-count // SHARD_SIZE))
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_path, dataset_name="movielens", split="train", filetype_suffix="tfrecord"
    )
    shard_lengths, num_bytes = [], 0
    for shard in range(num_shards):
        start, stop = shard * count // num_shards, (shard + 1) * count // num_shards
        path = template.sharded_filepath(shard_index=shard, num_shards=num_shards)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in examples(start, stop):
                writer.write(record)
        shard_lengths.append(stop - start)
        num_bytes += os.path.getsize(path)
        print(f"{name}: {stop:,} of {count:,} examples written", file=sys.stderr)
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo("train", shard_lengths, num_bytes, filename_template=template)],
            dataset_name="movielens",
        )
    )
    builder.info.write_to_directory(folder)


# A tf.train.Example in protocol buffer wire format, written directly: building one through the protobuf
# classes costs 40 microseconds, which is 17 minutes for 25 million. Every field used is "length-delimited"
# (wire type 2): a tag, the payload's length, then the payload.


def varint(number: int) -> bytes:
    encoded = bytearray()
    while number >= 0x80:
        encoded.append(number & 0x7F | 0x80)
        number >>= 7
    encoded.append(number)
    return bytes(encoded)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bytes_feature(value: bytes) -> bytes:
    return field(1, field(1, value))  # Feature.bytes_list (1) holding BytesList.value (1)


def float_feature(value: float) -> bytes:
    return field(2, field(1, struct.pack("<f", value)))  # Feature.float_list (2), packed floats


def int64_feature(values: list[int]) -> bytes:
    return field(3, field(1, b"".join(varint(value) for value in values)))  # Feature.int64_list (3), packed


def feature_entry(key: str, feature: bytes) -> bytes:
    # Features.feature (1) is a map<string, Feature>: each entry a message of key (1) and value (2).
    return field(1, field(1, key.encode()) + field(2, feature))


def example(feature_entries: bytes) -> bytes:
    return field(1, feature_entries)  # Example.features (1)


if __name__ == "__main__":
    sys.exit(main())
