"""The held-out metrics, worked out by hand on small cases."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

import recommend
from beyond import big_data, evaluation
from conftest import from_ratings, tiny_movielens
from test_cli import TINY_TRAINING, assert_one_line_error, run
from test_training import train_tiny


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
    recall, ndcg = evaluation.ranking_metrics(scores, seen, relevant, cutoff=2)
    assert len(recall) == len(ndcg) == 2
    # User 0: movie 1 is seen, so the top 2 are movies 0 and 2; one hit (movie 2, at rank 2) of 3 relevant.
    # User 1: the tie puts movies 1 and 2 first; one hit (movie 1, at rank 1) of 2 relevant.
    # User 2 has nothing relevant to find and is left out of the averages.
    ideal = 1 + 1 / math.log2(3)  # two hits at ranks 1 and 2
    np.testing.assert_allclose(recall, [1 / 3, 1 / 2])
    np.testing.assert_allclose(ndcg, [(1 / math.log2(3)) / ideal, 1 / ideal])


def test_rankings_are_a_stable_sorts_with_many_ties_and_seen_movies():
    # Scores of one decimal among 40 movies tie often; the ten first must be what a full stable sort
    # gives (lower column first), seen movies never among them unless nothing else is left.
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((200, 40)), 1)
    seen = rng.random((200, 40)) < 0.3
    seen[0, :35] = True  # only five unseen: the ranking's last five are seen ones, in column order
    relevant = rng.random((200, 40)) < 0.2
    seen[:, 39], relevant[:, 39] = False, True  # everyone has something to find
    by_sort = np.argsort(np.where(seen, np.inf, -scores), axis=1, kind="stable")[:, :10]
    hits = np.take_along_axis(relevant & ~seen, by_sort, axis=1)
    recall, ndcg = evaluation.ranking_metrics(scores, seen, relevant, cutoff=10)
    np.testing.assert_allclose(recall, hits.sum(axis=1) / (relevant & ~seen).sum(axis=1))
    discounts = 1 / np.log2(np.arange(2, 12))
    ideal = np.cumsum(discounts)[np.minimum((relevant & ~seen).sum(axis=1), 10) - 1]
    np.testing.assert_allclose(ndcg, (hits * discounts).sum(axis=1) / ideal)


def test_ndcg_is_one_when_every_relevant_title_comes_first():
    scores = np.array([[0.1, 0.9, 0.8, 0.7]])
    relevant = np.array([[False, True, True, False]])
    recall, ndcg = evaluation.ranking_metrics(scores, np.zeros_like(relevant), relevant, cutoff=3)
    assert (recall.tolist(), ndcg.tolist()) == ([1.0], [1.0])


def test_the_split_has_the_tutorials_sizes_and_no_overlap():
    n = 100_000
    data = from_ratings(
        np.full(n, b"1", dtype=object), np.full(n, b"Heat", dtype=object), np.array([b"Heat"], dtype=object)
    )
    train_rows, test_rows = evaluation.split_like_the_tutorial(data)
    assert (len(train_rows), len(test_rows)) == (80_000, 20_000)
    assert len(np.union1d(train_rows, test_rows)) == n
    # Shuffled, not the first 80% in file order.
    assert not np.array_equal(np.sort(train_rows[:100]), np.arange(100))


def test_most_popular_scores_every_movie_by_its_training_count():
    data = tiny_movielens()
    _, movie_titles_vocabulary = recommend.build_vocabularies(data)
    beta_1, alpha_2 = (
        np.flatnonzero(data.movie_titles == title)[:count]
        for title, count in [(b"Beta 1 (2002)", 3), (b"Alpha 2 (2001)", 1)]
    )
    model = evaluation.build_most_popular_model(
        movie_titles_vocabulary, evaluation.subset(data, np.concatenate([beta_1, alpha_2]))
    )
    scores = model.user_model(tf.constant(["1", "7"])) @ tf.transpose(model.movie_model(data.catalogue))
    expected = [{b"Beta 1 (2002)": 3.0, b"Alpha 2 (2001)": 1.0}.get(title, 0.0) for title in data.catalogue]
    np.testing.assert_array_equal(scores.numpy(), [expected, expected])


def test_the_rated_matrix_of_a_block_of_users_marks_what_each_rated_once():
    # Users a, b, c; b rated Fargo twice and c rated nothing in this subset.
    data = from_ratings(
        np.array([b"a", b"b", b"b", b"a", b"c"], dtype=object),
        np.array([b"Heat", b"Fargo", b"Fargo", b"Ran", b"Heat"], dtype=object),
        np.array([b"Fargo", b"Heat", b"Ran", b"Alien"], dtype=object),
    )
    assert data.catalogue.tolist() == [b"Fargo", b"Heat", b"Ran"]  # Alien: nobody rated it
    training = evaluation.subset(data, np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(
        evaluation.rated_matrix(big_data.rated_by_user(training), slice(0, 3), 3),
        [[False, True, True], [True, False, False], [False, False, False]],
    )
    np.testing.assert_array_equal(
        evaluation.rated_matrix(big_data.rated_by_user(training), slice(1, 3), 3),
        [[True, False, False], [False] * 3],
    )
    assert big_data.rated_titles_per_user(data) == {"a": 2, "b": 1, "c": 1}


def test_metrics_do_not_depend_on_how_many_users_are_ranked_at_once(monkeypatch):
    data = tiny_movielens()
    training, held_out = evaluation.subset(data, np.arange(0, 40, 2)), evaluation.subset(
        data, np.arange(1, 40, 2)
    )
    _, movie_titles_vocabulary = recommend.build_vocabularies(data)
    model = evaluation.build_most_popular_model(movie_titles_vocabulary, training)
    whole = evaluation.held_out_metrics(model, training, held_out)
    monkeypatch.setattr(evaluation, "USERS_PER_BLOCK", 3)  # 8 users in blocks of 3, 3 and 2
    assert evaluation.held_out_metrics(model, training, held_out) == whole
    assert whole["recall_at_10"] > 0


def test_spread_is_the_mean_and_the_sample_standard_deviation():
    runs = [{"ndcg": 0.1, "recall": 0.5}, {"ndcg": 0.3, "recall": 0.5}, {"ndcg": 0.2, "recall": 0.5}]
    # Mean 0.2; deviations -0.1, 0.1, 0: sample variance (0.01 + 0.01) / (3 - 1) = 0.01, so std 0.1.
    assert evaluation.spread(runs) == {"ndcg": {"mean": 0.2, "std": 0.1}, "recall": {"mean": 0.5, "std": 0.0}}
    assert evaluation.spread(runs[:1]) == {
        "ndcg": {"mean": 0.1, "std": 0.0},
        "recall": {"mean": 0.5, "std": 0.0},
    }


def evaluate(capsys, tiny_tfds, *extra):
    status, out, err = run(capsys, "--evaluate", "--data-dir", tiny_tfds, *TINY_TRAINING, *extra)
    assert status == 0, err
    return out, err


def test_repeat_reports_the_spread_of_the_runs_it_would_make_one_by_one(tiny_tfds, capsys):
    out, err = evaluate(capsys, tiny_tfds, "--repeat", "3", "--seed", "7", "--json")
    results = json.loads(out)
    assert results["repeat"] == 3 and results["seeds"] == [7, 8, 9]
    assert "Run 3 of 3, seed 9" in err
    singles = [
        json.loads(evaluate(capsys, tiny_tfds, "--seed", str(seed), "--json")[0]) for seed in (7, 8, 9)
    ]
    for metric, summary in results["two_tower"].items():
        values = [single["two_tower"][metric] for single in singles]
        mean = sum(values) / 3
        std = math.sqrt(sum((value - mean) ** 2 for value in values) / 2)
        assert summary == {"mean": pytest.approx(mean, abs=1e-4), "std": pytest.approx(std, abs=1e-4)}
    # Most-popular has nothing random to vary: the same numbers, a spread of zero.
    for metric, summary in results["most_popular"].items():
        assert summary == {"mean": singles[0]["most_popular"][metric], "std": 0.0}


def test_without_repeat_the_json_keeps_plain_numbers(tiny_tfds, capsys):
    results = json.loads(evaluate(capsys, tiny_tfds, "--json")[0])
    assert "repeat" not in results
    assert all(isinstance(value, float) for value in results["two_tower"].values())


def test_the_repeat_table_shows_mean_and_spread(tiny_tfds, capsys):
    out, _ = evaluate(capsys, tiny_tfds, "--repeat", "2")
    lines = out.splitlines()
    assert lines[1] == "Mean ± standard deviation over 2 runs, seeds 42 to 43"
    assert lines[2].split() == ["metric", "two_tower", "most_popular"]
    assert all(line.count("±") == 2 for line in lines[3:])
    assert len(lines) == 3 + 7


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--user", "1", "--repeat", "3"], "--repeat repeats an --evaluate run"),
        (["--evaluate", "--repeat", "0"], "--repeat: must be at least 1"),
        (["--evaluate", "--repeat", "2", "--seed", "4294967295"], "runs past the largest seed"),
    ],
)
def test_repeat_mistakes_are_refused_in_one_line(argv, fragment, capsys):
    assert_one_line_error(*run(capsys, *argv), fragment)


def test_top_k_accuracy_is_the_rank_of_each_held_out_movie():
    # The tutorial's FactorizedTopK, counted by hand: a held-out rating is a hit at k when fewer than k
    # catalogue titles score above its own movie for its user.
    data = tiny_movielens()
    training, held_out = evaluation.subset(data, np.arange(0, 40, 2)), evaluation.subset(
        data, np.arange(1, 40, 2)
    )
    model = train_tiny(data=training).model
    metrics = evaluation.held_out_metrics(model, training, held_out)
    # In TensorFlow's float32 arithmetic, as the metric computes them: a movie's own score and the same
    # movie's score among the catalogue's can differ in the last bit.
    users = model.user_model(held_out.user_ids)
    own = tf.reduce_sum(users * model.movie_model(held_out.movie_titles), axis=1)
    scores = tf.matmul(users, model.movie_model(data.catalogue), transpose_b=True)
    above = np.sum(scores.numpy() > own.numpy()[:, np.newaxis], axis=1)
    assert sorted(set(above)) != [0] and 0 < metrics["top_5"] < 1  # ranks of many sizes: a test of them
    for k in recommend.TOP_KS:
        assert metrics[f"top_{k}"] == pytest.approx(np.mean(above < k), abs=1e-4), k
