"""Alternating least squares: the tuned recipe's loss minimised one side at a time (--tuned).

Implicit ALS's loss (beyond/tuned.py) is a quadratic in each user's vector once the movies' vectors are
fixed, and in each movie's once the users' are. So instead of Adam's small steps down the gradient, a
pass moves every user's vector to (nearly) its best given the movies, then every movie's given the
users, as Hu, Koren and Volinsky do, and as the `implicit` library does. A handful of passes converge,
at any size.

For a user u with rated movies m (weights w), the movies' vectors e, unrated weights c, the user's L2
lambda_u and its pull p towards the mean e-bar_u of their rated movies' vectors (beyond/tuned.py,
RowTerms), the best vector x is

    (G + sum over rated m of (w_m - c_m) e_m e_m^T + lambda_u I) x
        =  sum over rated m of w_m e_m  +  lambda_u p e-bar_u,

with G = (sum over every movie of c e e^T), one matrix for all users. A movie m's system is the same
with the users' vectors, its own L2 (which pulls towards 0), and c_m for every user: c_m G' + sum over
its raters of (w - c_m) x x^T + lambda_m I, G' the plain sum of x x^T over all users. Each system is
solved nearly, by three steps of conjugate gradients from the vector it had (implicit's method): they
need products with each row's matrix, never the matrix itself, which takes more work to form than the
three steps take.

    1. group_ratings: one side's ratings as padded rows, rows of a length together, solved in chunks
    2. AlternatingLeastSquares: a Keras model whose one step solves one side, so that fit() runs a pass
       per epoch and the progress lines, the stopping rules, Ctrl-C and TensorBoard work as with Adam
    3. solve_tables: how the tuned recipe trains (beyond/recipes.py): the towers' own embedding tables
       are what it solves, so the index, the saved model and --liked see nothing new

    python recommend.py --user 42 --tuned
    python benchmarks/synthetic_movielens.py --data-dir /tmp/synthetic-25m    # a 25M to try it on
    python recommend.py --dataset 25m --data-dir /tmp/synthetic-25m --tuned --user 1 --timings
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

import recommend

# Padded lengths grow by about a quarter from one to the next, so padding adds about a tenth to the work.
LENGTH_GROWTH = 1.25
# Ratings solved together: small enough that their gathered vectors stay in the processor's cache
# through every step of the solve, which chunks of a million did not (docs/bigger-data.md).
RATINGS_PER_CHUNK = 16_384
# Grouping the ratings of the big sizes takes seconds before the first pass: a line says so.
GROUPING_REPORTED_AFTER_SECONDS = 2
CONJUGATE_GRADIENT_STEPS = 3  # implicit's default: from the last pass's vector, three steps come close
# Chunks solved at once (the while loop's parallel_iterations): see AlternatingLeastSquares.solve.
CHUNKS_AT_ONCE = 2


@dataclasses.dataclass(frozen=True)
class Side:
    """One side's ratings (users' or movies'), ready to solve a chunk at a time. Chunk c solves the
    chunks[c, 1] rows from rows[chunks[c, 0]], each padded to chunks[c, 2] ratings: the other table's rows
    they rated and their weights are other_rows[chunks[c, 3]:] and weights[chunks[c, 3]:], one padded row
    after another. Padding rates row 0 with weight 0."""

    rows: tf.Tensor  # int32: the rows of the table solved (the rows with ratings), chunk after chunk
    other_rows: tf.Tensor  # int32: the other table's rows they rated
    weights: tf.Tensor  # float32: those ratings' weights
    chunks: tf.Tensor  # int32 [chunks, 4]: first row, rows, padded length, first place
    total_weight: float  # the sum of the weights: the loss when every score is 0

    # The rows with ratings, as numbers; every other row's best vector is 0.
    solved_rows = property(lambda self: self.rows.numpy())


def group_ratings(rows: np.ndarray, other_rows: np.ndarray, weights: np.ndarray, table_size: int) -> Side:
    """Groups the ratings (rows[i] rated other_rows[i] with weights[i]) by row: each row's ratings padded
    to the next length of a geometric series, rows of the same padded length together, in chunks."""
    counts = np.bincount(rows, minlength=table_size)
    solved_rows = np.flatnonzero(counts)
    lengths = padded_lengths(int(counts.max()))
    padded = lengths[np.searchsorted(lengths, counts[solved_rows])]
    by_length = np.argsort(padded, kind="stable")
    solved_rows, padded = solved_rows[by_length], padded[by_length]
    # A rating's place in the padded layout: its row's first place, plus how many of the row's ratings
    # come before it in the order of a sort by row. On 25 million ratings every array here is 100 MB or
    # 200 MB, so they are made in place, as 32-bit numbers, and dropped as soon as they are used.
    first_places = np.cumsum(padded) - padded
    shift = np.zeros(table_size, np.int64)
    shift[solved_rows] = first_places
    shift -= np.cumsum(counts) - counts
    order = row_order(rows)
    place = np.empty(len(rows), np.int32)
    place[order] = np.arange(len(rows), dtype=np.int32)
    del order
    place += shift.astype(np.int32)[rows]
    padded_other_rows = np.zeros(int(padded.sum()), np.int32)
    padded_other_rows[place] = other_rows
    padded_weights = np.zeros(len(padded_other_rows), np.float32)
    padded_weights[place] = weights
    del place
    chunks = []
    for length in np.unique(padded):
        first, last = np.searchsorted(padded, [length, length + 1])
        rows_per_chunk = max(1, RATINGS_PER_CHUNK // int(length))
        for row in range(first, last, rows_per_chunk):
            chunks.append((row, min(rows_per_chunk, last - row), length, first_places[row]))
    return Side(
        tf.constant(solved_rows, tf.int32),
        tf.constant(padded_other_rows),
        tf.constant(padded_weights),
        tf.constant(np.array(chunks, np.int64).reshape(-1, 4), tf.int32),
        float(weights.sum(dtype=np.float64)),
    )


def row_order(rows: np.ndarray) -> np.ndarray:
    """The order that sorts ROWS, equal rows in their own order (np.argsort's stable sort), as 32-bit numbers.

    numpy sorts 16-bit numbers by radix sort, so this sorts by the low 16 bits and then, stably, by the
    high ones: on 25 million ratings of 162,541 users, 3.5 s where argsort's comparison sort took 6 s,
    and 1.2 s for the 59,047 movies, whose rows fit in 16 bits (docs/bigger-data.md)."""
    order = np.argsort(rows.astype(np.uint16), kind="stable").astype(np.int32)
    if len(rows) and rows.max() >= 2**16:
        high = (rows >> 16).astype(np.uint16)[order]
        order = order[np.argsort(high, kind="stable")]
    return order


def padded_lengths(longest: int) -> np.ndarray:
    """The lengths rows are padded to, up to the first at least LONGEST: 1, 2, 3, 4, 5, 7, 9, 12, ..."""
    lengths, length = [], 1
    while not lengths or lengths[-1] < longest:
        lengths.append(length)
        length = max(length + 1, int(np.ceil(length * LENGTH_GROWTH)))
    return np.array(lengths)


# Grouping the ratings holds each rating's two rows and weight (12 bytes); the sort's order and each
# rating's place in the layout, with the temporaries that make them (20); and both sides' layouts, a row
# and a weight for each padded place (8 bytes, a quarter more places than ratings at most), the side
# being made twice over, in numpy and in TensorFlow (tests/test_alternating_least_squares.py measures it).
BYTES_PER_RATING = 12 + 20 + 3 * 8 * LENGTH_GROWTH
# A chunk's rows, while their systems are solved: the vector, b, the rated rows' mean and the pulled b,
# the residual, the direction, and the products that make them, each embedding_dim numbers a row.
VECTORS_PER_ROW = 12
# RowTerms' numbers for each table row (an L2 and an unrated weight, counted from 64-bit counts), and the
# solved rows' copies of them the solver keeps.
ROW_TERM_NUMBERS = 8


def memory_bytes(sizes, embedding_dim: int) -> int:
    """A generous estimate of what solve_tables holds at once, in bytes, for SIZES (big_data.Sizes).

    The two embedding tables; while a side is solved, the other table read once and weighted for G, and
    the solved rows gathered, written and joined (five copies of the larger table); G, counted three
    times, generously (embedding_dim x embedding_dim each; one is made); each row's L2 and unrated
    weight (RowTerms, and the solved rows' copies: ROW_TERM_NUMBERS a row); CHUNKS_AT_ONCE chunks, each
    the gathered vectors of its padded places (RATINGS_PER_CHUNK, or the longest row if longer) and
    VECTORS_PER_ROW vectors for each of its rows; and the ratings' layout, BYTES_PER_RATING each."""
    d, float_bytes = embedding_dim, 4
    larger_table = max(sizes.users, sizes.movies) + 1
    tables = (sizes.users + 1 + sizes.movies + 1 + 5 * larger_table) * d * float_bytes
    places = max(RATINGS_PER_CHUNK, int(padded_lengths(sizes.most_ratings_of_one)[-1]))
    rows = min(RATINGS_PER_CHUNK, larger_table)
    chunk = (places + VECTORS_PER_ROW * rows) * d * float_bytes
    tables += ROW_TERM_NUMBERS * (sizes.users + 1 + sizes.movies + 1) * float_bytes
    return tables + 3 * d * d * float_bytes + CHUNKS_AT_ONCE * chunk + int(BYTES_PER_RATING * sizes.ratings)


class AlternatingLeastSquares(tf.keras.Model):
    """Solves the user table given the movie table (step 0 of an epoch), then the movie table given the
    user table (step 1). The loss it reports is the one a pass ends at, as implicit ALS's loss without
    the L2 (the sum an Adam epoch reports): Keras's summed_loss, which the progress lines divide by the
    number of ratings."""

    def __init__(self, user_table: tf.Variable, movie_table: tf.Variable, users: Side, movies: Side, terms):
        super().__init__()
        self.tables = (user_table, movie_table)
        self.sides = (users, movies)
        # For each side: each solved row's L2 and unrated weight (in the order of Side.rows), the other
        # table's rows' weights in G, and the L2's pull towards the rated rows' mean. A user's unrated
        # weight is its movie's, a movie's its own; only a user's L2 pulls.
        self.weighting = [
            (
                tf.constant(terms.user_l2[users.solved_rows]),
                tf.ones(len(users.solved_rows)),
                tf.constant(terms.unrated_weight),
                terms.rated_titles_pull,
            ),
            (
                tf.constant(terms.movie_l2[movies.solved_rows]),
                tf.constant(terms.unrated_weight[movies.solved_rows]),
                tf.ones(user_table.shape[0]),
                0.0,
            ),
        ]
        self.summed_loss = tf.keras.metrics.Sum(name="summed_loss")

    @property
    def metrics(self):
        return [self.summed_loss]

    def train_step(self, side_number):
        user_table, movie_table = self.tables
        loss = tf.cond(
            tf.equal(side_number, 0),
            lambda: self.solve(user_table, movie_table, self.sides[0], *self.weighting[0]),
            lambda: self.solve(movie_table, user_table, self.sides[1], *self.weighting[1]),
        )
        # The pass's loss is the loss once the movies are solved too.
        self.summed_loss.update_state(tf.where(tf.equal(side_number, 1), loss, 0.0))
        return {"summed_loss": self.summed_loss.result(), "loss": loss}

    def solve(self, table, other, ratings: Side, row_l2, row_unrated, other_unrated, pull) -> tf.Tensor:
        """Replaces each row of TABLE that has ratings by its best vector given OTHER, a chunk at a time;
        returns the loss (without the L2) once they are. ROW_L2 and ROW_UNRATED are each solved row's L2 and
        unrated weight; an unrated pair weighs its row's times its other row's OTHER_UNRATED; each row's
        L2 pulls towards PULL times the mean of the OTHER rows it rated."""
        other_vectors = other.read_value()
        gram = tf.matmul(other_vectors * other_unrated[:, tf.newaxis], other_vectors, transpose_a=True)
        start = tf.gather(table, ratings.rows)
        solved = tf.TensorArray(tf.float32, size=tf.shape(ratings.chunks)[0], infer_shape=False)

        def solve_chunk(chunk, solved, loss):
            first_row, count, length, first_place = tf.unstack(ratings.chunks[chunk])
            size = count * length
            rows = slice(first_row, first_row + count)
            vectors, chunk_loss = conjugate_gradient(
                other_vectors,
                gram,
                row_unrated[rows],
                other_unrated,
                row_l2[rows],
                pull,
                start[rows],
                tf.reshape(ratings.other_rows[first_place : first_place + size], [count, length]),
                tf.reshape(ratings.weights[first_place : first_place + size], [count, length]),
            )
            return chunk + 1, solved.write(chunk, vectors), loss + chunk_loss

        # Two chunks at a time: each is a string of small operations, which leave a second processor core
        # idle unless another chunk runs beside them (docs/bigger-data.md).
        _, solved, loss = tf.while_loop(
            lambda chunk, *_: chunk < solved.size(),
            solve_chunk,
            (0, solved, 0.0),
            parallel_iterations=CHUNKS_AT_ONCE,
        )
        table.scatter_update(tf.IndexedSlices(solved.concat(), ratings.rows))
        return ratings.total_weight + loss


def conjugate_gradient(other_vectors, gram, row_unrated, other_unrated, row_l2, pull, x, other_rows, weights):
    """A few conjugate-gradient steps on each row's system A x = b + lambda t, from X; the new X and the
    rows' part of the loss without the L2, x^T (A - lambda I) x - 2 b . x (the sum of the weights, the
    rest of it, is added once). A = row_unrated G + sum over rated of (w - unrated) e e^T + lambda I, an
    unrated pair's weight being its row's ROW_UNRATED times the other row's OTHER_UNRATED; b = sum over
    rated of w e; t, where the L2 pulls the row, is PULL (a Python number) times the mean of its rated
    rows' e."""
    rated = tf.gather(other_vectors, other_rows)  # [rows, length, embedding_dim]
    row_unrated, row_l2 = row_unrated[:, tf.newaxis], row_l2[:, tf.newaxis]
    # A rated movie's weight beyond an unrated one's; padding (weight 0) must add nothing, not -e e^T.
    extra = tf.where(weights > 0, weights - row_unrated * tf.gather(other_unrated, other_rows), 0.0)

    def weighted_sum(coefficients):
        """Each row's sum over its rated rows of coefficient x e. As a row vector times the row's
        [length, embedding_dim] matrix: matvec's transpose_a took twice as long (docs/bigger-data.md)."""
        return small_matmul(coefficients[:, tf.newaxis, :], rated)[:, 0, :]

    def times_a(vectors):
        scores = small_matmul(rated, vectors[:, :, tf.newaxis])[:, :, 0]
        return row_unrated * small_matmul(vectors, gram) + row_l2 * vectors + weighted_sum(extra * scores)

    b = weighted_sum(weights)
    target = 0.0
    if pull:  # a number when the graph is built: the movies' L2 pulls towards 0, and skips this
        is_rated = tf.cast(weights > 0, tf.float32)  # padding, at weight 0, is not a rated row
        rated_sum = weighted_sum(is_rated)
        target = pull * tf.math.divide_no_nan(rated_sum, tf.reduce_sum(is_rated, axis=1, keepdims=True))
    pulled_b = b + row_l2 * target
    residual = pulled_b - times_a(x)
    direction = residual
    residual_norm = tf.reduce_sum(tf.square(residual), axis=1, keepdims=True)
    for _ in range(CONJUGATE_GRADIENT_STEPS):
        a_direction = times_a(direction)
        curvature = tf.reduce_sum(direction * a_direction, axis=1, keepdims=True)
        step = tf.math.divide_no_nan(residual_norm, curvature)  # 0 once a row is solved exactly
        x += step * direction
        residual -= step * a_direction
        new_norm = tf.reduce_sum(tf.square(residual), axis=1, keepdims=True)
        direction = residual + tf.math.divide_no_nan(new_norm, residual_norm) * direction
        residual_norm = new_norm
    # With the residual r = b + lambda t - A x, x^T A x - 2 (b + lambda t) . x = -x . (b + lambda t + r).
    loss = -tf.reduce_sum(x * (pulled_b + residual)) + tf.reduce_sum(row_l2 * x * (2.0 * target - x))
    return x, loss


def small_matmul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """tf.matmul(a, b) as the op BatchMatMulV3, not the V2 or MatMul that tf.matmul makes of float32s.
    TensorFlow on x86 hands V2 and MatMul to oneDNN, whose kernels take two to three times as long on
    the solver's small products; V3 it leaves to its own (tensorflow/tensorflow#56350, docs/speed.md)."""
    return tf.raw_ops.BatchMatMulV3(x=a, y=b, Tout=a.dtype)


def solve_tables(model, data: recommend.MovieLens, weights: np.ndarray, terms_for, epochs: int, callbacks=()):
    """Fits the towers' embedding tables to implicit ALS's loss, WEIGHTS being each rating's weight, in at
    most EPOCHS passes; terms_for(user_rows, movie_rows, user_table_size, movie_table_size) gives the
    RowTerms (beyond/tuned.py). `callbacks` are Keras's, as for the core's train()."""
    started = time.perf_counter()
    user_rows, movie_rows = rating_rows(model, data)
    user_table, movie_table = model.user_model.layers[-1].embeddings, model.movie_model.layers[-1].embeddings
    terms = terms_for(user_rows, movie_rows, user_table.shape[0], movie_table.shape[0])
    users = group_ratings(user_rows, movie_rows, weights, user_table.shape[0])
    if model.stop_training:  # Ctrl-C while grouping (see guards.stop_training_on_ctrl_c): no need to go on
        return
    movies = group_ratings(movie_rows, user_rows, weights, movie_table.shape[0])
    del user_rows, movie_rows, weights  # the solver has its own copy now, and on 25M these are large
    if model.stop_training:
        return
    if time.perf_counter() - started >= GROUPING_REPORTED_AFTER_SECONDS:
        recommend.progress(f"  ratings grouped by user and by movie ({time.perf_counter() - started:.1f}s)")
    # A row nobody rated (the unknown row, a user or movie seen only in a test set) is best at 0, and
    # zeroed now, it adds nothing to the other side's G, which sums over every row.
    for table, ratings in ((user_table, users), (movie_table, movies)):
        keep = np.zeros(table.shape[0], np.float32)
        keep[ratings.solved_rows] = 1.0
        table.assign(table * keep[:, np.newaxis])
    solver = AlternatingLeastSquares(user_table, movie_table, users, movies, terms)
    solver.compile()
    steps = recommend.without_autotuning(tf.data.Dataset.range(2))
    solver.fit(steps, epochs=epochs, verbose=0, callbacks=list(callbacks))


def rating_rows(model, data: recommend.MovieLens) -> tuple[np.ndarray, np.ndarray]:
    """Each rating's row in the user table and in the movie table. Each distinct id and title is looked
    up once, then indexed by every rating."""
    user_rows = embedding_rows(model.user_model, data.users)[data.rating_users]
    return user_rows, embedding_rows(model.movie_model, data.titles)[data.rating_titles]


def embedding_rows(tower: tf.keras.Model, keys: np.ndarray) -> np.ndarray:
    """Each key's row in the tower's embedding table: what its StringLookup maps it to."""
    return tower.layers[0](tf.constant(keys)).numpy().astype(np.int32)
