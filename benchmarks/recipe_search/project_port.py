"""The project's own solver and evaluation, for the tuned-recipe search (search.py, round2.py).

The search fits settings with its exact solver (exact_als.py); these functions train and score with the
project's code at the commit given as --project, so that each figure can be checked against what the
project itself would give:

    1. project_check: stage 0, today's recipe trained by the project beside the exact solver, on one fold
    2. product_solver_fit: the project's solver, subclassed with the changes a chosen setting needs
       (alpha0 G, each row's lambda, popularity-weighted unrated pairs), the project's files unchanged
    3. project_tables_metrics: any tables scored by the project's evaluation.held_out_metrics

The project's solver has had stage 18's changes itself since commit f86a3e6 (RowTerms in beyond/tuned.py,
conjugate_gradient's per-row terms); scaled_conjugate_gradient ports them onto the solver of fe33bf5, the
commit the search was run and is reproduced against (README.md), and is not needed for a later one.

    python search.py --project /path/to/repo --test      # uses this module; it is not run by itself
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from exact_als import TODAY, Ratings, Setting, fit, metrics, row_l2

# 4. Stage 0: this solver against the project's -------------------------------------------------------------


def project_check(data, rows: np.ndarray, fitted: Ratings, held_out: Ratings, seed: int = 1) -> dict:
    """Trains tuned.TUNED with the project's own code (beyond/tuned.py, beyond/alternating_least_squares.py)
    on the fitted ratings (ROWS of DATA), and scores its tables twice: with this script's metrics and with
    the project's (evaluation.held_out_metrics, which also runs TFRS's FactorizedTopK), and this script's
    solver on the same setting beside them."""
    import recommend
    import tensorflow as tf
    from beyond import alternating_least_squares, evaluation, guards, tuned

    fitted_rows, held_out_rows = rows
    training = evaluation.subset(data, fitted_rows)
    testing = evaluation.subset(data, held_out_rows)
    tf.keras.utils.set_random_seed(seed)
    vocabularies = recommend.build_vocabularies(data)
    model = tuned.build_model(*vocabularies, data.catalogue, tuned.TUNED)
    started = time.perf_counter()
    guards.train(model, training, tuned.TUNED, seed)  # as --tuned trains: stops once converged
    seconds = time.perf_counter() - started
    users = model.user_model.layers[-1].embeddings.numpy()[
        alternating_least_squares.embedding_rows(model.user_model, data.users)
    ]
    movies = model.movie_model.layers[-1].embeddings.numpy()[
        alternating_least_squares.embedding_rows(model.movie_model, data.catalogue)
    ]
    project = evaluation.held_out_metrics(model, training, testing)
    started = time.perf_counter()
    mine_users, mine_movies, passes = fit(fitted, TODAY, seed)
    mine_seconds = time.perf_counter() - started
    return {
        "project solver, project metrics": {
            "ndcg": project["ndcg_at_10"],
            "recall": project["recall_at_10"],
            "top_100": project["top_100"],
            "seconds": round(seconds, 2),
        },
        "project solver, this script's metrics": metrics(users, movies, fitted, held_out),
        "this script's solver and metrics": {
            **metrics(mine_users, mine_movies, fitted, held_out),
            "passes": passes,
            "seconds": round(mine_seconds, 2),
        },
    }


# 7. The project's solver with the two changes a chosen setting needs ---------------------------------------


def product_solver_fit(data, rows: np.ndarray, setting: Setting, seed: int = 1, epochs: int = 15):
    """Trains the project's towers with the project's solver (beyond/alternating_least_squares.py: three
    warm-started conjugate-gradient steps a row, a pass per epoch, stopping at the first pass that changes the
    loss by under 0.1%, at most 15), changed only as SETTING needs: alpha0 G in each system, a rated pair's
    extra weight w - alpha0, and each row's own lambda. The project's files are not changed: the solver's
    model is subclassed here. Returns (model, user table rows, catalogue rows, epochs trained)."""
    import recommend
    import tensorflow as tf
    from beyond import alternating_least_squares as als
    from beyond import evaluation, guards, tuned

    training = evaluation.subset(data, rows)
    recipe = dataclasses.replace(tuned.TUNED, embedding_dim=setting.dim, epochs=epochs)
    tf.keras.utils.set_random_seed(seed)
    model = tuned.build_model(*recommend.build_vocabularies(data), data.catalogue, recipe)
    stars = training.rating_stars.astype(np.float64)
    weights = (setting.base + setting.alpha * (stars / stars.mean()) ** setting.p).astype(np.float32)
    user_rows, movie_rows = als.rating_rows(model, training)
    user_table, movie_table = model.user_model.layers[-1].embeddings, model.movie_model.layers[-1].embeddings
    users = als.group_ratings(user_rows, movie_rows, weights, user_table.shape[0])
    movies = als.group_ratings(movie_rows, user_rows, weights, movie_table.shape[0])
    # Each solved row's lambda, in the order of Side.rows; N: the other side's rows that have ratings.
    user_counts = np.bincount(user_rows, minlength=user_table.shape[0])
    movie_counts = np.bincount(movie_rows, minlength=movie_table.shape[0])
    user_l2 = row_l2(user_counts[users.solved_rows], len(data.catalogue), setting).astype(np.float32)
    movie_l2 = (
        row_l2(movie_counts[movies.solved_rows], len(data.users), setting) * setting.movie_l2_ratio
    ).astype(np.float32)
    # An unrated pair's weight is alpha0 x movie_scale[movie row]; 1 but with popularity-aware weights.
    movie_scale = np.ones(movie_table.shape[0], np.float32)
    if setting.beta:
        rated = movie_counts > 0
        movie_scale[rated] = (movie_counts[rated] / movie_counts[rated].mean()) ** setting.beta
    # For each side: the scale of the other table's rows in its G, and of its own solved rows' alpha0.
    scales = (
        (tf.constant(movie_scale), tf.ones(len(users.solved_rows))),
        (tf.ones(user_table.shape[0]), tf.constant(movie_scale[movies.solved_rows])),
    )
    for table, side in ((user_table, users), (movie_table, movies)):
        keep = np.zeros(table.shape[0], np.float32)
        keep[side.solved_rows] = 1.0
        table.assign(table * keep[:, np.newaxis])

    class Solver(als.AlternatingLeastSquares):
        row_l2 = (tf.constant(user_l2), tf.constant(movie_l2))

        def train_step(self, side_number):
            user_table, movie_table = self.tables
            loss = tf.cond(
                tf.equal(side_number, 0),
                lambda: self.solve_scaled(user_table, movie_table, self.sides[0], self.row_l2[0], *scales[0]),
                lambda: self.solve_scaled(movie_table, user_table, self.sides[1], self.row_l2[1], *scales[1]),
            )
            self.summed_loss.update_state(tf.where(tf.equal(side_number, 1), loss, 0.0))
            return {"summed_loss": self.summed_loss.result(), "loss": loss}

        def solve_scaled(self, table, other, ratings, l2_rows, other_scale, row_scale):
            other_vectors = other.read_value()
            gram = tf.matmul(other_vectors * other_scale[:, tf.newaxis], other_vectors, transpose_a=True)
            start = tf.gather(table, ratings.rows)
            solved = tf.TensorArray(tf.float32, size=tf.shape(ratings.chunks)[0], infer_shape=False)

            def solve_chunk(chunk, solved, loss):
                first_row, count, length, first_place = tf.unstack(ratings.chunks[chunk])
                size = count * length
                vectors, chunk_loss = scaled_conjugate_gradient(
                    other_vectors,
                    gram,
                    setting.alpha0 * row_scale[first_row : first_row + count],
                    other_scale,
                    l2_rows[first_row : first_row + count],
                    start[first_row : first_row + count],
                    tf.reshape(ratings.other_rows[first_place : first_place + size], [count, length]),
                    tf.reshape(ratings.weights[first_place : first_place + size], [count, length]),
                )
                return chunk + 1, solved.write(chunk, vectors), loss + chunk_loss

            _, solved, loss = tf.while_loop(
                lambda chunk, *_: chunk < solved.size(), solve_chunk, (0, solved, 0.0), parallel_iterations=2
            )
            table.scatter_update(tf.IndexedSlices(solved.concat(), ratings.rows))
            return ratings.total_weight + loss

    solver = Solver(user_table, movie_table, users, movies, 0.0)
    solver.compile()
    stopping = guards.StopWhenConverged(recipe.converged_below)
    history = solver.fit(
        tf.data.Dataset.range(2),
        epochs=epochs,
        verbose=0,
        callbacks=[guards.EpochProgress(training.num_ratings), stopping],
    )
    user_vectors = user_table.numpy()[als.embedding_rows(model.user_model, data.users)]
    movie_vectors = movie_table.numpy()[als.embedding_rows(model.movie_model, data.catalogue)]
    return model, user_vectors, movie_vectors, len(history.history["loss"])


def scaled_conjugate_gradient(other_vectors, gram, alpha0_rows, other_scale, l2_rows, x, other_rows, weights):
    """beyond/alternating_least_squares.conjugate_gradient with the changes: each row's system is
    alpha0 G + sum over its ratings of (w - alpha0) e e^T + lambda_row I, each row with its own alpha0
    (ALPHA0_ROWS) and lambda (L2_ROWS). With popularity-aware weights of unrated pairs, G (GRAM) sums the
    other rows weighted by OTHER_SCALE and a pair's alpha0 is its row's times its other row's scale."""
    import tensorflow as tf

    rated = tf.gather(other_vectors, other_rows)
    unrated = alpha0_rows[:, tf.newaxis] * tf.gather(other_scale, other_rows)
    extra = tf.where(weights > 0, weights - unrated, 0.0)
    l2_rows, alpha0_rows = l2_rows[:, tf.newaxis], alpha0_rows[:, tf.newaxis]

    def times_a(vectors):
        scores = tf.linalg.matvec(rated, vectors)
        return (
            alpha0_rows * tf.matmul(vectors, gram)
            + l2_rows * vectors
            + tf.linalg.matvec(rated, extra * scores, transpose_a=True)
        )

    b = tf.linalg.matvec(rated, weights, transpose_a=True)
    residual = b - times_a(x)
    direction = residual
    residual_norm = tf.reduce_sum(tf.square(residual), axis=1, keepdims=True)
    for _ in range(3):
        a_direction = times_a(direction)
        curvature = tf.reduce_sum(direction * a_direction, axis=1, keepdims=True)
        step = tf.math.divide_no_nan(residual_norm, curvature)
        x += step * direction
        residual -= step * a_direction
        new_norm = tf.reduce_sum(tf.square(residual), axis=1, keepdims=True)
        direction = residual + tf.math.divide_no_nan(new_norm, residual_norm) * direction
        residual_norm = new_norm
    loss = -tf.reduce_sum(x * (b + residual)) - tf.reduce_sum(l2_rows * tf.square(x))
    return x, loss


def project_tables_metrics(data, train_rows, test_rows, users, movies, dim) -> dict:
    """Tables (user rows in data.users' order, movie rows in the catalogue's) put into the project's model
    and scored by the project's evaluation.held_out_metrics (TFRS's FactorizedTopK for top_100)."""
    import recommend
    from beyond import alternating_least_squares as als
    from beyond import evaluation, tuned

    recipe = dataclasses.replace(tuned.TUNED, embedding_dim=dim)
    model = tuned.build_model(*recommend.build_vocabularies(data), data.catalogue, recipe)
    for tower, keys, vectors in (
        (model.user_model, data.users, users),
        (model.movie_model, data.catalogue, movies),
    ):
        table = tower.layers[-1].embeddings
        values = np.zeros(table.shape, np.float32)
        values[als.embedding_rows(tower, keys)] = vectors
        table.assign(values)
    result = evaluation.held_out_metrics(
        model, evaluation.subset(data, train_rows), evaluation.subset(data, test_rows)
    )
    return {"ndcg": result["ndcg_at_10"], "recall": result["recall_at_10"], "top_100": result["top_100"]}
