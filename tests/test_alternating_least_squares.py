"""The tuned recipe's solver (beyond/alternating_least_squares.py): the layout worked out by hand, each
solve checked against numpy's exact one, the loss it reports against every pair scored, and what it
learns on the tiny dataset's planted tastes."""

import dataclasses
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

import recommend
from beyond import alternating_least_squares, evaluation, guards, tuned
from conftest import ALPHA, PLANTED_MOVIE, PLANTED_USER, tiny_movielens
from test_training import fits_autotuning, titles, top, train_tiny
from test_tuned import TINY_TUNED, whole_objective

# The tiny recipe on implicit ALS's loss, solved; an L2 small enough for 39 ratings to shape vectors.
TINY_ALS = dataclasses.replace(TINY_TUNED, optimizer="als", embedding_l2=1.0, epochs=30, converged_below=0.0)
# With each row's own L2, 0.05 (n + N): about 0.8 for a user (n 4 or 5, N 12 movie rows) and 0.65 for a
# movie (N 9 user rows); and unrated movies weighted (ratings / average)^0.5, 0.52 to 1.05.
SCALED_ALS = dataclasses.replace(
    TINY_ALS, embedding_l2=0.05, l2_frequency_power=1.0, unrated_popularity_power=0.5
)
# And each user's L2 pulling towards 0.7 times the mean of their rated movies' vectors.
PULLED_ALS = dataclasses.replace(SCALED_ALS, rated_titles_pull=0.7)


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


def test_rows_are_ordered_stably_beyond_sixteen_bits():
    # Row 65,541 is 65,536 + 5: its low 16 bits tie with row 5, its high ones put it after 65,536. Equal
    # rows keep their own order (places 0 and 3, 2 and 5).
    rows = np.array([70_000, 5, 65_541, 70_000, 65_536, 65_541, 0], np.int32)
    order = alternating_least_squares.row_order(rows)
    np.testing.assert_array_equal(order, [6, 1, 4, 2, 5, 0, 3])
    assert order.dtype == np.int32
    np.testing.assert_array_equal(alternating_least_squares.row_order(rows[[1, 6, 1]]), [1, 0, 2])


def solver_for(data, recipe, seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = recipe.build_model(*recommend.build_vocabularies(data), data.catalogue)
    rows = alternating_least_squares.rating_rows(model, data)
    return model, rows, tuned.rating_weights(data, recipe)


def test_one_solve_gives_each_user_the_exact_least_squares_vector():
    # With 3 numbers a vector, three conjugate-gradient steps solve each 3 x 3 system exactly: the user's
    # own L2, 0.05 (n + 12), and G and each rated movie's extra weight with the movies' unrated weights.
    data = tiny_movielens()
    recipe = dataclasses.replace(SCALED_ALS, embedding_dim=3, weight_by_stars=True)
    solver, (user_rows, movie_rows, weights), terms = grouped_solver(data, recipe)
    (user_table, movie_table), (users, _) = solver.tables, solver.sides
    solver.solve(user_table, movie_table, users, *solver.weighting[0])
    y = movie_table.numpy().astype(np.float64)
    unrated = (np.bincount(movie_rows, minlength=12) * 11 / 40) ** 0.5  # ratings / their average, ^0.5
    unrated[unrated == 0] = 1.0
    np.testing.assert_allclose(terms.unrated_weight, unrated, rtol=1e-6)
    for user in np.unique(user_rows):
        rated = user_rows == user
        y_rated, w, c = y[movie_rows[rated]], weights[rated].astype(np.float64), unrated[movie_rows[rated]]
        l2 = 0.05 * (rated.sum() + 12)
        system = (y * unrated[:, None]).T @ y + l2 * np.eye(3) + (y_rated * (w - c)[:, None]).T @ y_rated
        exact = np.linalg.solve(system, (y_rated * w[:, None]).sum(axis=0))
        np.testing.assert_allclose(user_table.numpy()[user], exact, rtol=1e-4, atol=1e-6)


class EpochLosses(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(logs["loss"])


@pytest.mark.parametrize("recipe", [SCALED_ALS, PULLED_ALS], ids=["scaled", "pulled"])
def test_the_loss_it_reports_is_implicit_als_loss_over_every_pair(recipe):
    data = tiny_movielens()
    model, (user_rows, movie_rows), weights = solver_for(data, recipe)
    losses = EpochLosses()
    guards.run_training(model, data, dataclasses.replace(recipe, epochs=3), seed=0, callbacks=[losses])
    # Every user row against every movie row: rated pairs want 1 with their weight, the rest 0 with their
    # movie's unrated weight.
    x = model.user_model.layers[-1].embeddings.numpy().astype(np.float64)
    y = model.movie_model.layers[-1].embeddings.numpy().astype(np.float64)
    unrated = tuned.row_terms(recipe, user_rows, movie_rows, len(x), len(y)).unrated_weight
    scores = x @ y.T
    total = np.sum(unrated * scores**2)
    rated = scores[user_rows, movie_rows]
    total += np.sum(weights * (1 - rated) ** 2 - unrated[movie_rows] * rated**2)
    # The solver sums the weights and each row's share in float32, and the two nearly cancel: its rounding
    # is a few float32 steps of the sum of the weights, not of the small loss that is left.
    rounding = 1e-6 * float(weights.sum()) / data.num_ratings
    assert losses.losses[-1] == pytest.approx(total / data.num_ratings, abs=rounding)
    # One loss a pass: the loss once the movies are solved too (whose L2 pulls towards 0, so this is the
    # movie side's sum; the users' pulled sum is worked out by hand in test_the_pull_lengthens_...).
    assert len(losses.losses) == 3


@pytest.mark.parametrize("recipe", [TINY_ALS, SCALED_ALS], ids=["flat", "scaled"])
def test_it_reaches_the_minimum_adam_creeps_towards_and_finds_the_planted_tastes(recipe):
    # Adam's steps on the loss of beyond/tuned.py, each row's L2 and unrated weights included, go down to
    # where the solver lands and no lower: the two are the same loss.
    solved = train_tiny(recipe)
    by_adam = train_tiny(dataclasses.replace(recipe, optimizer="adam", learning_rate=0.05, epochs=300))
    als_objective = whole_objective(solved, recipe)
    assert als_objective <= whole_objective(by_adam, recipe) * 1.001
    assert als_objective == pytest.approx(whole_objective(by_adam, recipe), rel=0.01)
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


def test_the_solver_runs_without_tf_datas_autotuning_whose_thread_held_each_passs_end(monkeypatch):
    seen = fits_autotuning(monkeypatch)
    data = tiny_movielens()
    model, _, _ = solver_for(data, TINY_ALS)
    dataclasses.replace(TINY_ALS, epochs=1).train(model, data, seed=0)
    assert seen == [False]


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


def grouped_solver(data, recipe):
    """The tiny data's solver, its two sides grouped, before any solve; each rating's rows and weight; and
    the recipe's RowTerms."""
    model, (user_rows, movie_rows), weights = solver_for(data, recipe)
    user_table = model.user_model.layers[-1].embeddings
    movie_table = model.movie_model.layers[-1].embeddings
    terms = tuned.row_terms(recipe, user_rows, movie_rows, user_table.shape[0], movie_table.shape[0])
    users = alternating_least_squares.group_ratings(user_rows, movie_rows, weights, user_table.shape[0])
    movies = alternating_least_squares.group_ratings(movie_rows, user_rows, weights, movie_table.shape[0])
    solver = alternating_least_squares.AlternatingLeastSquares(user_table, movie_table, users, movies, terms)
    return solver, (user_rows, movie_rows, weights), terms


def solve_side(solver, side_number):
    """One half-step: the users given the movies (0) or the movies given the users (1)."""
    table, other = solver.tables if side_number == 0 else solver.tables[::-1]
    solver.solve(table, other, solver.sides[side_number], *solver.weighting[side_number])


def conjugate_gradient_by_hand(
    x, other, rated_rows, rated_weights, l2, steps, row_unrated=1.0, other_unrated=None, pull=0.0
):
    """Conjugate gradients on (c Y^T C Y + l2 I + sum (w - c c_y) y y^T) x = sum w y + l2 PULL y-bar, in
    float64, from X: c is the row's unrated weight ROW_UNRATED, C the other rows' OTHER_UNRATED (1 each if
    None), y-bar the mean of the rated rows."""
    other_unrated = np.ones(len(other)) if other_unrated is None else other_unrated
    rated = other[rated_rows]
    extra = rated_weights - row_unrated * other_unrated[rated_rows]
    a = (
        row_unrated * (other * other_unrated[:, None]).T @ other
        + l2 * np.eye(len(x))
        + (rated * extra[:, None]).T @ rated
    )
    b = (rated * rated_weights[:, None]).sum(axis=0) + l2 * pull * rated.mean(axis=0)
    residual = b - a @ x
    direction, norm = residual, residual @ residual
    for _ in range(steps):
        step = norm / (direction @ a @ direction)
        x = x + step * direction
        residual = residual - step * (a @ direction)
        direction, norm = residual + (residual @ residual) / norm * direction, residual @ residual
    return x, np.linalg.solve(a, b)


def by_side(terms, user_rows, movie_rows):
    """For each side: its ratings' rows, the other side's, and for a row R of it, by_hand(R) the keyword
    arguments of conjugate_gradient_by_hand that RowTerms give it."""
    movies_unrated = terms.unrated_weight.astype(np.float64)
    return [
        (
            user_rows,
            movie_rows,
            lambda row: {
                "l2": terms.user_l2[row],
                "other_unrated": movies_unrated,
                "pull": terms.rated_titles_pull,
            },
        ),
        (movie_rows, user_rows, lambda row: {"l2": terms.movie_l2[row], "row_unrated": movies_unrated[row]}),
    ]


@pytest.mark.parametrize("recipe", [SCALED_ALS, PULLED_ALS], ids=["scaled", "pulled"])
def test_a_solve_is_three_conjugate_gradient_steps_from_the_vectors_each_row_had_on_both_sides(recipe):
    # Five numbers a vector, more than the three steps: each row ends near its best vector, not at it,
    # and where it ends depends on where it started. Each row has its own L2 and unrated weights, and
    # with the pull each user's L2 its own target.
    data = tiny_movielens()
    recipe = dataclasses.replace(recipe, embedding_dim=5, weight_by_stars=True)
    solver, (user_rows, movie_rows, weights), terms = grouped_solver(data, recipe)
    # Vectors far from zero, as a later pass starts from, so that starting from zero would show.
    rng = np.random.default_rng(0)
    for table in solver.tables:
        table.assign(rng.normal(0, 1, table.shape).astype(np.float32))
    away_from_exact, away_from_zero = [], []
    for side_number, (rows, other_rows, by_hand) in enumerate(by_side(terms, user_rows, movie_rows)):
        table, other = solver.tables if side_number == 0 else solver.tables[::-1]
        start, fixed = table.numpy().astype(np.float64), other.numpy().astype(np.float64)
        solve_side(solver, side_number)
        for row in np.unique(rows):
            rated = rows == row
            rated_weights = weights[rated].astype(np.float64)
            expected, exact = conjugate_gradient_by_hand(
                start[row], fixed, other_rows[rated], rated_weights, steps=3, **by_hand(row)
            )
            np.testing.assert_allclose(table.numpy()[row], expected, rtol=2e-4, atol=2e-5)
            from_zero, _ = conjugate_gradient_by_hand(
                np.zeros(5), fixed, other_rows[rated], rated_weights, steps=3, **by_hand(row)
            )
            away_from_exact.append(np.abs(expected - exact).max())
            away_from_zero.append(np.abs(expected - from_zero).max())
    assert max(away_from_exact) > 0.01 and max(away_from_zero) > 0.01


def test_small_matmul_multiplies_as_tf_matmul_does_batched_or_not():
    batched = alternating_least_squares.small_matmul(
        tf.constant([[[1.0, 2.0]], [[0.0, 1.0]]]), tf.constant([[[3.0], [4.0]], [[5.0], [6.0]]])
    )
    assert batched.numpy().tolist() == [[[11.0]], [[6.0]]]
    plain = alternating_least_squares.small_matmul(
        tf.constant([[1.0, 2.0]]), tf.constant([[3.0, 1.0], [4.0, 0.5]])
    )
    assert plain.numpy().tolist() == [[11.0, 2.0]]


@pytest.mark.parametrize("pull", [0.0, 0.7], ids=["towards zero", "pulled"])
def test_a_chunks_products_are_all_ones_onednn_leaves_to_tensorflow(pull):
    # TensorFlow on x86 hands BatchMatMulV2 and MatMul to oneDNN, two to three times slower on these
    # products: a tf.matmul slipped back into the steps would cost a third of every pass at 25M.
    other = tf.random.normal([6, 4])
    solve = tf.function(
        lambda x, rows, weights: alternating_least_squares.conjugate_gradient(
            other, tf.eye(4), tf.ones(2), tf.ones(6), tf.fill([2], 0.5), pull, x, rows, weights
        )
    )
    graph = solve.get_concrete_function(
        tf.TensorSpec([2, 4]), tf.TensorSpec([2, 3], tf.int32), tf.TensorSpec([2, 3])
    ).graph
    kinds = {operation.type for operation in graph.get_operations()}
    assert "BatchMatMulV3" in kinds
    assert not kinds & {"BatchMatMul", "BatchMatMulV2", "MatMul"}


def objective(solver, user_rows, movie_rows, weights, terms) -> float:
    """Implicit ALS's whole objective for the solver's tables, in float64: every pair scored, each unrated
    one by its movie's unrated weight, plus each row's L2."""
    x, y = (table.numpy().astype(np.float64) for table in solver.tables)
    unrated = terms.unrated_weight.astype(np.float64)
    scores = x @ y.T
    rated = scores[user_rows, movie_rows]
    total = np.sum(unrated * scores**2) + np.sum(weights * (1 - rated) ** 2 - unrated[movie_rows] * rated**2)
    return float(
        total + np.sum(terms.user_l2 * np.sum(x**2, axis=1)) + np.sum(terms.movie_l2 * np.sum(y**2, axis=1))
    )


@pytest.mark.parametrize("recipe", [TINY_ALS, SCALED_ALS], ids=["flat", "scaled"])
def test_no_half_pass_ever_raises_the_objective(recipe):
    data = tiny_movielens()
    solver, (user_rows, movie_rows, weights), terms = grouped_solver(
        data, dataclasses.replace(recipe, embedding_dim=5)
    )
    objectives = [objective(solver, user_rows, movie_rows, weights, terms)]
    for _ in range(15):
        for side_number in (0, 1):
            solve_side(solver, side_number)
            objectives.append(objective(solver, user_rows, movie_rows, weights, terms))
    rises = np.diff(objectives) / np.array(objectives[:-1])
    assert (rises < 1e-6).all(), rises.max()  # float32 rounding, nothing more
    assert objectives[-1] < objectives[0] / 2


def test_where_it_stops_one_more_exact_solve_changes_nothing():
    # Stationary: trained until it converged, the exact best vector of every row, one side and then the
    # other, lowers the objective by almost nothing.
    data = tiny_movielens()
    recipe = dataclasses.replace(SCALED_ALS, embedding_dim=5, epochs=200, converged_below=1e-6)
    solver, (user_rows, movie_rows, weights), terms = grouped_solver(data, recipe)
    solver.compile()
    solver.fit(tf.data.Dataset.range(2), epochs=200, verbose=0)
    before = objective(solver, user_rows, movie_rows, weights, terms)
    for side_number, (rows, other_rows, by_hand) in enumerate(by_side(terms, user_rows, movie_rows)):
        table, other = solver.tables if side_number == 0 else solver.tables[::-1]
        vectors, fixed = table.numpy().astype(np.float64), other.numpy().astype(np.float64)
        for row in np.unique(rows):
            rated = rows == row
            _, vectors[row] = conjugate_gradient_by_hand(
                vectors[row],
                fixed,
                other_rows[rated],
                weights[rated].astype(np.float64),
                steps=0,
                **by_hand(row),
            )
        table.assign(vectors.astype(np.float32))
    after = objective(solver, user_rows, movie_rows, weights, terms)
    assert 0 <= (before - after) / before < 1e-5


def test_chunks_of_any_size_solve_alike_a_row_longer_than_a_chunk_included(monkeypatch):
    data = tiny_movielens()
    recipe = dataclasses.replace(SCALED_ALS, embedding_dim=5)
    whole, _, _ = grouped_solver(data, recipe)
    # Three ratings a chunk: users' rows of 4 to 7 places each fill a chunk alone, longer than it; the
    # movies' rows of 1 place go three to a chunk, the last chunk of a length holding what is left.
    monkeypatch.setattr(alternating_least_squares, "RATINGS_PER_CHUNK", 3)
    chunked, (user_rows, movie_rows, weights), _ = grouped_solver(data, recipe)
    users, movies = chunked.sides
    assert max(users.chunks.numpy()[:, 2]) > 3 and set(users.chunks.numpy()[:, 1]) == {1}
    lengths_of_one = movies.chunks.numpy()[movies.chunks.numpy()[:, 2] == 1]
    assert lengths_of_one[:, 1].tolist() == [3] * (len(lengths_of_one) - 1) + [lengths_of_one[-1, 1]]
    for side, rows, other_rows in [(users, user_rows, movie_rows), (movies, movie_rows, user_rows)]:
        # Every chunk's rows follow on from the last one's; every rating is in its row's places once.
        chunks = side.chunks.numpy()
        assert chunks[0, 0] == 0 and (chunks[1:, 0] == chunks[:-1, 0] + chunks[:-1, 1]).all()
        assert chunks[-1, 0] + chunks[-1, 1] == len(side.solved_rows)
        laid_out = []
        for first_row, count, length, first_place in chunks:
            for n, row in enumerate(side.solved_rows[first_row : first_row + count]):
                places = slice(first_place + n * length, first_place + (n + 1) * length)
                kept = side.weights.numpy()[places] > 0
                laid_out += [
                    (row, other, w)
                    for other, w in zip(
                        side.other_rows.numpy()[places][kept], side.weights.numpy()[places][kept]
                    )
                ]
        assert sorted(laid_out) == sorted(zip(rows, other_rows, weights))
    for solver in (whole, chunked):
        for _ in range(2):
            for side_number in (0, 1):
                solve_side(solver, side_number)
    for ours, theirs in zip(chunked.tables, whole.tables):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_padding_adds_at_most_a_quarter_to_any_row():
    counts = np.concatenate([np.arange(1, 2000), np.random.default_rng(0).zipf(1.5, 20_000).clip(1, 100_000)])
    lengths = alternating_least_squares.padded_lengths(int(counts.max()))
    padded = lengths[np.searchsorted(lengths, counts)]
    assert (padded >= counts).all() and (padded <= alternating_least_squares.LENGTH_GROWTH * counts).all()
    rows = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    side = alternating_least_squares.group_ratings(rows, rows, np.ones(len(rows), np.float32), len(counts))
    assert len(side.other_rows.numpy()) == padded.sum() <= alternating_least_squares.LENGTH_GROWTH * len(rows)


def test_grouping_takes_no_more_memory_a_rating_than_the_estimate_allows():
    # What numpy allocates while both sides are grouped, the ratings themselves included, against the
    # estimate's BYTES_PER_RATING, which also counts the layouts' copies that TensorFlow (not traced) keeps.
    rng = np.random.default_rng(0)
    ratings, users, movies = 300_000, 5_000, 2_000
    tracemalloc.start()
    try:
        user_rows = rng.integers(0, users, ratings).astype(np.int32)
        movie_rows = np.minimum(rng.zipf(1.3, ratings), movies - 1).astype(np.int32)
        weights = rng.random(ratings, dtype=np.float32)
        sides = [
            alternating_least_squares.group_ratings(user_rows, movie_rows, weights, users),
            alternating_least_squares.group_ratings(movie_rows, user_rows, weights, movies),
        ]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    estimate = alternating_least_squares.BYTES_PER_RATING * ratings
    assert 0.5 * estimate < peak < estimate, peak / ratings
    assert (
        sum(len(side.other_rows.numpy()) for side in sides)
        <= 2 * alternating_least_squares.LENGTH_GROWTH * ratings
    )


def movie_scores_for_a_b_leaning_viewer(recipe) -> tuple[float, float]:
    """The movie half-step of the planted example below, the users held fixed: what viewer t scores P and N."""
    users = np.array([[1, 0]] * 4 + [[0, 1]] * 3 + [[0.3, 1]], np.float32)  # A, A, A, A, B, B, B, t
    user_rows = np.array([0, 1, 2, 3, 4, 5, 6], np.int32)
    movie_rows = np.array([0, 0, 0, 0, 0, 1, 1], np.int32)  # P: the four A users and one B; N: two B
    weights = np.full(7, 6.0, np.float32)
    user_table, movie_table = tf.Variable(users), tf.Variable(tf.zeros([2, 2]))
    terms = tuned.row_terms(recipe, user_rows, movie_rows, 8, 2)
    sides = [
        alternating_least_squares.group_ratings(user_rows, movie_rows, weights, 8),
        alternating_least_squares.group_ratings(movie_rows, user_rows, weights, 2),
    ]
    solver = alternating_least_squares.AlternatingLeastSquares(user_table, movie_table, *sides, terms)
    solve_side(solver, 1)  # two numbers a vector: three conjugate-gradient steps solve it exactly
    p, n = movie_table.numpy() @ users[7]
    return float(p), float(n)


def test_each_rows_own_l2_recovers_a_taste_that_one_l2_for_all_misses():
    # Group A (four users at (1, 0)) all rated P, and so did one of group B's three (at (0, 1)); two of B
    # rated N. Viewer t, at (0.3, 1), leans B and rated neither: within B, N is the better guess (2 of 3
    # against 1 of 3), but P has more ratings. With one L2 for every movie, P's five ratings win at every
    # L2 from 0.001 to 1000.
    for l2 in np.logspace(-3, 3, 13):
        p, n = movie_scores_for_a_b_leaning_viewer(dataclasses.replace(TINY_ALS, embedding_l2=float(l2)))
        assert p > n, l2
    # With each movie's L2 l2 (n + 8), 8 being the user rows, P's is 13 and N's 10 at l2 = 1: the many
    # ratings of a popular movie no longer shrink its L2's share, and t gets N. By hand, with G = sum of
    # x x^T over the 8 users = [[4.09, 0.3], [0.3, 4]] and weight 6 (5 more than an unrated pair's 1):
    #   P: (G + 5 [[4, 0], [0, 1]] + 13 I) y = 6 (4, 1);   N: (G + 5 [[0, 0], [0, 2]] + 10 I) y = 6 (0, 2).
    gram = np.array([[4.09, 0.3], [0.3, 4.0]])
    y_p = np.linalg.solve(gram + 5 * np.diag([4.0, 1.0]) + 13 * np.eye(2), [24.0, 6.0])
    y_n = np.linalg.solve(gram + 5 * np.diag([0.0, 2.0]) + 10 * np.eye(2), [0.0, 12.0])
    scaled = dataclasses.replace(TINY_ALS, embedding_l2=1.0, l2_frequency_power=1.0)
    p, n = movie_scores_for_a_b_leaning_viewer(scaled)
    np.testing.assert_allclose([p, n], [y_p @ [0.3, 1.0], y_n @ [0.3, 1.0]], rtol=1e-5)
    assert n > p + 0.03  # 0.497 against 0.457


def test_the_pull_lengthens_a_light_users_vector_more_than_a_heavy_ones_worked_out_by_hand():
    # Two movies, e1 = (1, 0) and e2 = (0, 1), each unrated weight 1, so G = I. Both users' ratings weigh
    # w = 3 and their L2 is 2; user 1 rated e1, user 2 both. Without the pull:
    #   user 1: A = G + (3 - 1) e1 e1^T + 2 I = diag(5, 3), b = (3, 0):     x = (0.6, 0)
    #   user 2: A = G + 2 I + 2 I = 5 I,                     b = (3, 3):     x = (0.6, 0.6)
    # With the pull 0.5, b gains 2 x 0.5 x (the mean of the rated movies):
    #   user 1: b = (3, 0) + (1, 0) = (4, 0):                x = (0.8, 0),   4/3 as long
    #   user 2: b = (3, 3) + (0.5, 0.5) = (3.5, 3.5):        x = (0.7, 0.7), 7/6 as long
    # Each vector keeps its direction and grows by 1 + lambda pull / (n w): the fewer a user's ratings,
    # the more the little they say counts in the movies' half-step.
    movies = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    rated = tf.constant([[0, 0], [0, 1]])  # user 1's second place is padding, at weight 0
    weights = tf.constant([[3.0, 0.0], [3.0, 3.0]])

    def solve(pull):
        x, loss = alternating_least_squares.conjugate_gradient(
            movies, tf.eye(2), tf.ones(2), tf.ones(2), tf.constant([2.0, 2.0]), pull, tf.zeros([2, 2]),
            rated, weights,
        )  # fmt: skip
        return x.numpy(), float(loss)

    plain, _ = solve(0.0)
    pulled, loss = solve(0.5)
    np.testing.assert_allclose(plain, [[0.6, 0.0], [0.6, 0.6]], atol=1e-6)
    np.testing.assert_allclose(pulled, [[0.8, 0.0], [0.7, 0.7]], atol=1e-6)
    # The loss it reports has no L2: user 1 scores 0.8 for its movie, 3 x 0.2^2 = 0.12 in all, and user 2
    # 0.7 for both, 2 x 3 x 0.3^2 = 0.54; the solver leaves out the sum of the weights (9), added once.
    assert loss + 9.0 == pytest.approx(0.12 + 0.54, abs=1e-5)


def test_with_the_pull_adam_lands_where_the_solver_does():
    # The pull's target moves with the movie table, so no single objective is lowered; what both ways of
    # training share is where they stop: each user at its best given the movies and its target, each
    # movie at its best given the users. Adam, with the target held fixed within each step, must stop
    # where the solver does, and so score every pair alike.
    recipe = dataclasses.replace(PULLED_ALS, embedding_dim=5, epochs=200, converged_below=1e-7)
    solved = train_tiny(recipe)
    by_adam = train_tiny(dataclasses.replace(recipe, optimizer="adam", learning_rate=0.05, epochs=600))
    unpulled = train_tiny(dataclasses.replace(recipe, rated_titles_pull=0.0))
    solved_scores, adam_scores, unpulled_scores = (
        trained.model.user_model.layers[-1].embeddings.numpy()
        @ trained.model.movie_model.layers[-1].embeddings.numpy().T
        for trained in (solved, by_adam, unpulled)
    )
    assert np.abs(solved_scores).max() > 0.3  # tastes, not vectors near zero
    np.testing.assert_allclose(adam_scores, solved_scores, atol=0.002)
    # Without the pull the solver stops somewhere else, further than Adam's rounding could explain.
    assert np.abs(unpulled_scores - solved_scores).max() > 0.005
    assert titles(top(solved, PLANTED_USER, 1, include_rated=False)) == [PLANTED_MOVIE]
