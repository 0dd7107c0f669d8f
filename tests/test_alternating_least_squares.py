"""The tuned recipe's solver (beyond/alternating_least_squares.py): the layout worked out by hand, each
solve checked against numpy's exact one, the loss it reports against every pair scored, and what it
learns on the tiny dataset's planted tastes."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import recommend
from beyond import alternating_least_squares, evaluation, guards, tuned
from conftest import ALPHA, PLANTED_MOVIE, PLANTED_USER, tiny_movielens
from test_training import titles, top, train_tiny
from test_tuned import TINY_TUNED, whole_objective

# The tiny recipe on implicit ALS's loss, solved; an L2 small enough for 39 ratings to shape vectors.
TINY_ALS = dataclasses.replace(TINY_TUNED, optimizer="als", embedding_l2=1.0, epochs=30, converged_below=0.0)


def test_padded_lengths_grow_by_about_a_quarter():
    # 1, then each the larger of one more and a quarter more, rounded up: 1.25 x 5 = 6.25 -> 7, 8.75 -> 9.
    np.testing.assert_array_equal(alternating_least_squares.padded_lengths(10), [1, 2, 3, 4, 5, 7, 9, 12])
    np.testing.assert_array_equal(alternating_least_squares.padded_lengths(1), [1])


def test_ratings_are_grouped_by_row_padded_and_chunked(monkeypatch):
    # Row 1 rated six rows of the other table (10 to 15), row 3 one (16); rows 0, 2 and 4 nothing.
    rows = np.array([1, 1, 3, 1, 1, 1, 1], np.int32)
    other_rows = np.array([10, 11, 16, 12, 13, 14, 15], np.int32)
    weights = np.array([1, 2, 7, 3, 4, 5, 6], np.float32)
    monkeypatch.setattr(alternating_least_squares, "RATINGS_PER_CHUNK", 7)
    side = alternating_least_squares.group_ratings(rows, other_rows, weights, table_size=5)
    # Shortest first: row 3 (1 rating, length 1), then row 1 (6 ratings, padded to 7 with row 0, weight 0).
    np.testing.assert_array_equal(side.rows, [3, 1])
    np.testing.assert_array_equal(side.solved_rows, [3, 1])
    columns, padded_weights = side.other_rows.numpy(), side.weights.numpy()
    assert columns[0] == 16 and padded_weights[0] == 7
    row_1 = sorted(zip(columns[1:7], padded_weights[1:7]))  # in any order within the row
    assert row_1 == [(10, 1), (11, 2), (12, 3), (13, 4), (14, 5), (15, 6)]
    assert (columns[7], padded_weights[7]) == (0, 0)
    # (first row, rows, padded length, first column): 7 ratings a chunk is one row of 7, or 7 rows of 1.
    np.testing.assert_array_equal(side.chunks, [[0, 1, 1, 0], [1, 1, 7, 1]])
    assert side.total_weight == 28


def solver_for(data, recipe, seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = recipe.build_model(*recommend.build_vocabularies(data), data.catalogue)
    rows = alternating_least_squares.rating_rows(model, data)
    return model, rows, tuned.rating_weights(data, recipe)


def test_one_solve_gives_each_user_the_exact_least_squares_vector():
    # With 3 numbers a vector, three conjugate-gradient steps solve each 3 x 3 system exactly.
    data = tiny_movielens()
    recipe = dataclasses.replace(TINY_ALS, embedding_dim=3, embedding_l2=0.5, weight_by_stars=True)
    model, (user_rows, movie_rows), weights = solver_for(data, recipe)
    user_table = model.user_model.layers[-1].embeddings
    movie_table = model.movie_model.layers[-1].embeddings
    users = alternating_least_squares.group_ratings(user_rows, movie_rows, weights, user_table.shape[0])
    movies = alternating_least_squares.group_ratings(movie_rows, user_rows, weights, movie_table.shape[0])
    solver = alternating_least_squares.AlternatingLeastSquares(user_table, movie_table, users, movies, 0.5)
    solver.solve(user_table, movie_table, users)
    y = movie_table.numpy().astype(np.float64)
    for user in np.unique(user_rows):
        rated = user_rows == user
        y_rated, w = y[movie_rows[rated]], weights[rated].astype(np.float64)
        system = y.T @ y + 0.5 * np.eye(3) + (y_rated * (w - 1)[:, None]).T @ y_rated
        exact = np.linalg.solve(system, (y_rated * w[:, None]).sum(axis=0))
        np.testing.assert_allclose(user_table.numpy()[user], exact, rtol=1e-4, atol=1e-6)


class EpochLosses(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(logs["loss"])


def test_the_loss_it_reports_is_implicit_als_loss_over_every_pair():
    data = tiny_movielens()
    model, (user_rows, movie_rows), weights = solver_for(data, TINY_ALS)
    losses = EpochLosses()
    guards.run_training(model, data, dataclasses.replace(TINY_ALS, epochs=3), seed=0, callbacks=[losses])
    # Every user row against every movie row: rated pairs want 1 with their weight, the rest 0 with 1.
    x = model.user_model.layers[-1].embeddings.numpy().astype(np.float64)
    y = model.movie_model.layers[-1].embeddings.numpy().astype(np.float64)
    scores = x @ y.T
    total = np.sum(scores**2)
    rated = scores[user_rows, movie_rows]
    total += np.sum(weights * (1 - rated) ** 2 - rated**2)
    # The solver sums the weights and each row's share in float32, and the two nearly cancel: its rounding
    # is a few float32 steps of the sum of the weights, not of the small loss that is left.
    rounding = 1e-6 * float(weights.sum()) / data.num_ratings
    assert losses.losses[-1] == pytest.approx(total / data.num_ratings, abs=rounding)
    # Each pass lowers the whole objective (the loss with its L2), which ALS solves for exactly.
    assert len(losses.losses) == 3


def test_it_reaches_the_minimum_adam_creeps_towards_and_finds_the_planted_tastes():
    solved = train_tiny(TINY_ALS)
    by_adam = train_tiny(dataclasses.replace(TINY_ALS, optimizer="adam", learning_rate=0.05, epochs=300))
    als_objective = whole_objective(solved, TINY_ALS.embedding_l2)
    assert als_objective <= whole_objective(by_adam, TINY_ALS.embedding_l2) * 1.001
    assert titles(top(solved, PLANTED_USER, 1, include_rated=False)) == [PLANTED_MOVIE]
    assert set(titles(top(solved, PLANTED_USER, 5, include_rated=True))) == set(ALPHA)


def test_rows_nobody_rated_are_zero():
    # User 8 and the unknown rows are in the vocabularies but not in the ratings trained on.
    data = tiny_movielens()
    training = evaluation.subset(data, np.flatnonzero(data.users[data.rating_users] != b"8"))
    model, _, _ = solver_for(data, TINY_ALS)
    dataclasses.replace(TINY_ALS, epochs=2).train(model, training, seed=0)
    user_table = model.user_model.layers[-1].embeddings.numpy()
    eight = alternating_least_squares.embedding_rows(model.user_model, np.array([b"8"], object))[0]
    assert not user_table[eight].any() and not user_table[0].any()
    assert not model.movie_model.layers[-1].embeddings.numpy()[0].any()
    assert np.abs(user_table).sum(axis=1).astype(bool).sum() == 7  # users 1 to 7 learned something


def test_it_stops_once_converged_and_says_why(capsys):
    data = tiny_movielens()
    model, _, _ = solver_for(data, TINY_ALS)
    losses = EpochLosses()
    recipe = dataclasses.replace(TINY_ALS, epochs=200, converged_below=0.001)
    guards.run_training(model, data, recipe, seed=0, callbacks=[losses])
    err = capsys.readouterr().err
    # It stopped at the first pass that changed the loss by under 0.1%, long before 200.
    assert len(losses.losses) < 200
    changes = np.abs(np.diff(losses.losses)) / np.array(losses.losses[:-1])
    assert changes[-1] < 0.001 and (changes[:-1] >= 0.001).all()
    assert f"  converged in epoch {len(losses.losses)} of at most 200: the loss, " in err
