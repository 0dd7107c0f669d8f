"""The held-out metrics, worked out by hand on small cases."""

import math

import numpy as np
import tensorflow as tf

import recommend
from conftest import tiny_movielens


def test_ranking_metrics_on_a_case_worked_out_by_hand():
    scores = np.array(
        [
            [0.9, 0.8, 0.8, 0.1, 0.5],
            [0.3, 0.7, 0.7, 0.7, 0.0],  # a three-way tie: the lower column ranks first
            [0.5, 0.4, 0.3, 0.2, 0.1],
        ]
    )
    seen = np.array(
        [
            [False, True, False, False, False],
            [False, False, False, False, False],
            [True, False, False, False, False],
        ]
    )
    relevant = np.array(
        [
            [False, False, True, True, True],
            [False, True, False, False, True],
            [True, False, False, False, False],  # only a movie already seen: no relevant titles
        ]
    )
    recall, ndcg = recommend.ranking_metrics(scores, seen, relevant, cutoff=2)
    # User 0: movie 1 is seen, so the top 2 are movies 0 and 2; one hit (movie 2, at rank 2) of 3 relevant.
    # User 1: the tie puts movies 1 and 2 first; one hit (movie 1, at rank 1) of 2 relevant.
    # User 2 has nothing relevant to find and is left out of the averages.
    ideal = 1 + 1 / math.log2(3)  # two hits at ranks 1 and 2
    assert math.isclose(recall, (1 / 3 + 1 / 2) / 2)
    assert math.isclose(ndcg, ((1 / math.log2(3)) / ideal + 1 / ideal) / 2)


def test_ndcg_is_one_when_every_relevant_title_comes_first():
    scores = np.array([[0.1, 0.9, 0.8, 0.7]])
    relevant = np.array([[False, True, True, False]])
    recall, ndcg = recommend.ranking_metrics(scores, np.zeros_like(relevant), relevant, cutoff=3)
    assert (recall, ndcg) == (1.0, 1.0)


def test_the_split_has_the_tutorials_sizes_and_no_overlap():
    n = 100_000
    data = recommend.MovieLens(
        user_ids=np.zeros(n, dtype=object), movie_titles=np.zeros(n, dtype=object), movies=np.array([])
    )
    train_rows, test_rows = recommend.split_like_the_tutorial(data)
    assert (len(train_rows), len(test_rows)) == (80_000, 20_000)
    assert len(np.union1d(train_rows, test_rows)) == n
    # Shuffled, not the first 80% in file order.
    assert not np.array_equal(np.sort(train_rows[:100]), np.arange(100))


def test_most_popular_scores_every_movie_by_its_training_count():
    data = tiny_movielens()
    _, movie_titles_vocabulary = recommend.build_vocabularies(data)
    training_titles = np.array([b"Beta 1 (2002)"] * 3 + [b"Alpha 2 (2001)"], dtype=object)
    model = recommend.build_most_popular_model(movie_titles_vocabulary, training_titles, data.catalogue)
    scores = model.user_model(tf.constant(["1", "7"])) @ tf.transpose(model.movie_model(data.catalogue))
    expected = [{b"Beta 1 (2002)": 3.0, b"Alpha 2 (2001)": 1.0}.get(title, 0.0) for title in data.catalogue]
    np.testing.assert_array_equal(scores.numpy(), [expected, expected])
