"""The synthetic MovieLens of benchmarks/synthetic_movielens.py: TFDS reads it as MovieLens 25M, and its
ratings have the shape the generator promises."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import recommend

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import synthetic_movielens  # noqa: E402

SMALL = ["--ratings", "3000", "--users", "60", "--movies", "150"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("synthetic")
    assert synthetic_movielens.main(["--data-dir", str(data_dir), *SMALL]) == 0
    return str(data_dir)


def read_all(name: str, data_dir: str) -> list[dict]:
    return list(tfds.as_numpy(tfds.builder(name, data_dir=data_dir).as_dataset(split="train")))


def test_the_protocol_buffer_encoding_is_what_tensorflow_parses():
    assert synthetic_movielens.varint(1) == b"\x01"
    assert synthetic_movielens.varint(300) == b"\xac\x02"  # the example in protobuf's own documentation
    record = synthetic_movielens.example(
        synthetic_movielens.feature_entry("user_id", synthetic_movielens.bytes_feature(b"42"))
        + synthetic_movielens.feature_entry("user_rating", synthetic_movielens.float_feature(3.5))
        + synthetic_movielens.feature_entry("movie_genres", synthetic_movielens.int64_feature([0, 7, 300]))
    )
    features = tf.train.Example.FromString(record).features.feature
    assert features["user_id"].bytes_list.value == [b"42"]
    assert features["user_rating"].float_list.value == [3.5]
    assert features["movie_genres"].int64_list.value == [0, 7, 300]


def test_tfds_reads_every_feature_of_movielens_25m(synthetic):
    ratings = read_all("movielens/25m-ratings", synthetic)
    movies = read_all("movielens/25m-movies", synthetic)
    assert len(ratings) == 3000 and len(movies) == 150
    assert set(ratings[0]) == {
        "movie_genres",
        "movie_id",
        "movie_title",
        "timestamp",
        "user_id",
        "user_rating",
    }
    title_of = {movie["movie_id"]: movie["movie_title"] for movie in movies}
    assert all(rating["movie_title"] == title_of[rating["movie_id"]] for rating in ratings)
    assert {float(rating["user_rating"]) for rating in ratings} <= set(np.arange(1, 11) / 2)
    assert all(1 <= len(movie["movie_genres"]) <= 3 for movie in movies)


def test_the_ratings_have_the_promised_shape(synthetic):
    ratings = read_all("movielens/25m-ratings", synthetic)
    pairs = [(rating["user_id"], rating["movie_id"]) for rating in ratings]
    assert len(set(pairs)) == len(pairs)  # nobody rates a movie twice
    users, per_user = np.unique([user for user, _ in pairs], return_counts=True)
    assert len(users) == 60 and per_user.min() >= synthetic_movielens.MIN_RATINGS_PER_USER
    # Stored in a random order, as TFDS stores examples, not user by user.
    assert len({user for user, _ in pairs[:100]}) > 20


def test_popularity_has_a_head_and_movies_nobody_rated():
    rng = np.random.default_rng(0)
    users, movies = synthetic_movielens.invent_ratings(rng, 200_000, 1000, 2000)
    counts = np.bincount(movies, minlength=2000)
    assert len(np.unique(users.astype(np.int64) * 2000 + movies)) == 200_000
    # The power law's head: the top 1% of movies hold far more than 1% of the ratings.
    assert np.sort(counts)[-20:].sum() > 0.05 * 200_000
    unrated = np.count_nonzero(counts == 0) / 2000
    assert 0.03 < unrated < 0.08  # 5.4% were given no popularity at all


def test_planted_tastes_decide_what_each_user_rates():
    # One hidden number each: users +1 or -1, movies +1 (even ones) or -1 (odd ones). At a taste of 10 a
    # matching movie is e^20 times likelier than the others, so every pick matches, however popular.
    rng = np.random.default_rng(0)
    user_tastes = np.where(np.arange(40) % 2, -10.0, 10.0)[:, np.newaxis]
    movie_tastes = np.where(np.arange(100) % 2, -1.0, 1.0)[:, np.newaxis]
    per_user = np.full(40, 30)
    popularity = 1.0 / (np.arange(100) + 1.0)
    popularity[[7, 8]] = 0  # never rated, however well they match
    popularity /= popularity.sum()
    movies = synthetic_movielens.draw_by_taste(rng, per_user, popularity, user_tastes, movie_tastes)
    users = np.repeat(np.arange(40), 30)
    assert len(movies) == 1200 and len(set(zip(users, movies))) == 1200  # no pair twice
    assert ((movies % 2) == (users % 2)).all()
    assert not np.isin(movies, [7, 8]).any()
    # With no taste, popularity alone decides: both halves are drawn from, and the head most.
    plain = synthetic_movielens.draw_by_taste(rng, per_user, popularity, 0 * user_tastes, movie_tastes)
    assert 0.3 < np.mean(plain % 2) < 0.7
    counts = np.bincount(plain, minlength=100)
    assert counts[0] > 30 and counts[0] > counts[50:].max()  # most users' 30 of 98 hold the most popular


def test_a_planted_set_is_written_and_most_popular_misses_what_the_two_towers_find(tmp_path, capsys):
    data_dir = str(tmp_path)
    planted = ["--size", "1m", "--ratings", "20000", "--users", "200", "--movies", "400", "--taste", "3"]
    assert synthetic_movielens.main(["--data-dir", data_dir, *planted]) == 0
    capsys.readouterr()
    status = recommend.main(["--dataset", "1m", "--data-dir", data_dir, "--evaluate", "--tuned", "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    results = json.loads(out)
    # 100 ratings a user: enough for the tuned recipe's L2 of 50, which 30 a user would drown.
    assert results["two_tower"]["ndcg_at_10"] > 2 * results["most_popular"]["ndcg_at_10"]


def test_recommend_trains_on_it_as_movielens_25m(synthetic, capsys):
    status = recommend.main(["--dataset", "25m", "--data-dir", synthetic, "--user", "1", "--epochs", "1"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "Top 10 movies for user 1" in out
    assert out.count("Synthetic Movie") == 10


def test_it_refuses_to_write_over_a_dataset_or_to_invent_impossible_counts(synthetic, capsys):
    assert synthetic_movielens.main(["--data-dir", synthetic, *SMALL]) == 2
    assert "already exists; delete it or choose another --data-dir" in capsys.readouterr().err
    assert synthetic_movielens.main(["--data-dir", synthetic, "--ratings", "100", "--users", "60"]) == 2
    assert "--ratings must be between" in capsys.readouterr().err
