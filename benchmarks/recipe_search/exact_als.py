"""The exact alternating least squares and the metrics of the tuned-recipe search (search.py, round2.py).

What search.py scores each setting with, kept apart so that each file reads in one sitting:

    1. the tutorial's split, read through the project's loader, and the validation folds of its 80%
    2. Setting, the recipe's levers, and an exact solver for implicit ALS's loss in numpy (float64): each
       row's system solved directly, in the primal when the row has at least as many ratings as
       dimensions, else in the dual, in the eigenbasis of the other side's Gram matrix, so that a row's
       own lambda costs nothing
    3. NDCG@10 and Recall@10 as beyond/evaluation.ranking_metrics computes them, and top_100 as TFRS's
       FactorizedTopK counts it

    python search.py --project /path/to/repo --quick     # uses this module; it is not run by itself
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import numpy as np

CUTOFF = 10  # NDCG@10, Recall@10
TOP_K_ACCURACY = 100  # TFRS's top-100 categorical accuracy
FOLDS = 5
FOLD_SEED = 32  # the shuffle of the 80,000 training ratings into folds
INIT_SCALE = 0.05  # Keras's default Embedding initializer: uniform in [-0.05, 0.05]
# Rows solved together: their gathered vectors and their systems stay within a few tens of MB.
ENTRIES_PER_CHUNK = 4_000_000


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# 1. Data -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ratings:
    """Ratings as numbers: each rating's user (0..users-1), its title's catalogue column and its stars."""

    users: np.ndarray
    columns: np.ndarray
    stars: np.ndarray
    num_users: int
    num_movies: int  # the catalogue: every title somebody rated in the whole dataset

    def take(self, rows: np.ndarray) -> "Ratings":
        return dataclasses.replace(
            self, users=self.users[rows], columns=self.columns[rows], stars=self.stars[rows]
        )

    def __len__(self) -> int:
        return len(self.users)


def load_tutorial_split(project: str):
    """The tutorial's 80,000 training and 20,000 test ratings, through the project's own loader and split;
    then the project's MovieLens record and the training rows' numbers in it (for stage 0's check)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, project)
    import recommend  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from beyond import big_data, evaluation

    data = recommend.load_movielens()
    train_rows, test_rows = evaluation.split_like_the_tutorial(data)
    everything = Ratings(
        data.rating_users.astype(np.int32),
        big_data.catalogue_rows(data),
        data.rating_stars.astype(np.float64),
        len(data.users),
        # catalogue_rows since the project's HEAD after fe33bf5; catalogue_titles before.
        len(data.catalogue_rows if hasattr(data, "catalogue_rows") else data.catalogue_titles),
    )
    return everything.take(train_rows), everything.take(test_rows), data, train_rows


def fold_rows(size: int, count: int = FOLDS, seed: int = FOLD_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fitted rows, held-out rows) of each fold: the training ratings shuffled once, cut into COUNT parts."""
    parts = np.array_split(np.random.default_rng(seed).permutation(size), count)
    return [(np.concatenate(parts[:k] + parts[k + 1 :]), parts[k]) for k in range(count)]


# 2. The recipe and its solver ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    dim: int = 64
    l2: float = 50.0  # lambda
    nu: float = 0.0  # lambda_row = l2 x (n_row + alpha0 x N)^nu
    alpha0: float = 1.0  # an unrated pair's weight
    alpha: float = 5.0  # w = 1 + alpha x (stars / average)^p ...
    p: float = 1.0
    base: float = 1.0  # ... + base - 1: w = base + alpha x (stars / average)^p (1 today)
    # An unrated pair's weight alpha0 x (the movie's ratings / the average movie's)^beta (He et al. 2016's
    # popularity-aware weights of missing data; 0 today: every unrated pair alike).
    beta: float = 0.0
    # Round 2: the movies' lambda is this times the users' (per-side L2; 1 in round 1 and today).
    movie_l2_ratio: float = 1.0

    def label(self) -> str:
        return (
            f"d={self.dim} l2={self.l2:g} nu={self.nu:g} alpha0={self.alpha0:g} alpha={self.alpha:g} "
            f"p={self.p:g}"
            + (f" base={self.base:g}" if self.base != 1.0 else "")
            + (f" beta={self.beta:g}" if self.beta else "")
            + (f" movie_l2_ratio={self.movie_l2_ratio:g}" if self.movie_l2_ratio != 1.0 else "")
        )


TODAY = Setting()  # tuned.TUNED: lambda 50, alpha0 1, flat L2, 64 numbers, w = 1 + 5 stars / average


def rating_weights(ratings: Ratings, setting: Setting) -> np.ndarray:
    """w = base + alpha x (stars / average stars)^p: with p = 1 and base 1, beyond/tuned.rating_weights."""
    average = ratings.stars.mean()
    return setting.base + setting.alpha * (ratings.stars / average) ** setting.p


def row_l2(counts: np.ndarray, other_side: int, setting: Setting) -> np.ndarray:
    """Each row's lambda: l2 x (n + alpha0 x N)^nu (Rendle et al. 2021), n its ratings, N the other
    side's size."""
    if setting.nu == 0:
        return np.full(len(counts), setting.l2)
    return setting.l2 * (counts + setting.alpha0 * other_side) ** setting.nu


@dataclasses.dataclass
class Side:
    """One side's ratings grouped by row: groups of rows padded to the same length, with the other side's
    rows they rated, their weights (0 in padding) and the number of ratings of every row."""

    groups: list  # (rows [k], other rows [k, L], weights [k, L])
    counts: np.ndarray


def group(rows: np.ndarray, other_rows: np.ndarray, weights: np.ndarray, size: int) -> Side:
    counts = np.bincount(rows, minlength=size)
    order = np.argsort(rows, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    lengths, length = [], 1
    while not lengths or lengths[-1] < counts.max():
        lengths.append(length)
        length = max(length + 1, int(math.ceil(length * 1.25)))
    padded = np.array(lengths)[np.searchsorted(lengths, counts)]
    groups = []
    for length in np.unique(padded[counts > 0]):
        members = np.flatnonzero((padded == length) & (counts > 0))
        others = np.zeros((len(members), length), np.int64)
        row_weights = np.zeros((len(members), length))
        for i, row in enumerate(members):
            entries = order[starts[row] : starts[row + 1]]
            others[i, : len(entries)] = other_rows[entries]
            row_weights[i, : len(entries)] = weights[entries]
        groups.append((members, others, row_weights))
    return Side(groups, counts)


def solve_side(
    other: np.ndarray,
    side: Side,
    l2: np.ndarray,
    alpha0: float,
    other_scale=None,
    row_scale=None,
    target=None,
) -> np.ndarray:
    """Every row's exact minimiser given the other table: the row's system

        (alpha0 G + sum over its ratings of (w - alpha0) e e^T + lambda_row I) x = sum over its ratings of w e

    solved in G's eigenbasis (G = Q diag(g) Q^T, so that alpha0 G + lambda_row I is
    Q diag(alpha0 g + lambda_row) Q^T for any lambda_row): directly (d x d) when the row has at least d
    ratings, else through the n x n system x' = D^-1 Z^T (I + C Z D^-1 Z^T)^-1 w (the push-through
    identity), Z the rated rows in the eigenbasis,
    C = diag(w - alpha0), D = diag(alpha0 g + lambda_row). Rows without ratings are 0.

    With popularity-aware weights an unrated pair weighs alpha0 x ROW_SCALE[row] x OTHER_SCALE[other row]:
    G is then the OTHER_SCALE-weighted sum, and each row's alpha0 its own (still diagonal). With a TARGET
    (round3.py: each row's L2 pulls towards it, not 0) the right-hand side gains lambda_row TARGET[row],
    and every row is solved in the primal."""
    dim = other.shape[1]
    other_scale = np.ones(len(other)) if other_scale is None else other_scale
    row_scale = np.ones(len(side.counts)) if row_scale is None else row_scale
    g, q = np.linalg.eigh(other.T @ (other * other_scale[:, np.newaxis]))
    rotated = other @ q
    solved = np.zeros((len(side.counts), dim))
    for members, others, weights in side.groups:
        length = others.shape[1]
        per_chunk = max(1, ENTRIES_PER_CHUNK // (length * max(length, dim)))
        for first in range(0, len(members), per_chunk):
            rows = members[first : first + per_chunk]
            z = rotated[others[first : first + per_chunk]]  # [k, L, d]
            w = weights[first : first + per_chunk]
            unrated = alpha0 * row_scale[rows, np.newaxis]  # [k, 1]
            c = np.where(w > 0, w - unrated * other_scale[others[first : first + per_chunk]], 0.0)
            diagonal = unrated * g + l2[rows, np.newaxis]  # [k, d]
            if length >= dim or target is not None:
                system = np.einsum("kld,kl,kle->kde", z, c, z, optimize=True)
                system[:, np.arange(dim), np.arange(dim)] += diagonal
                rhs = np.einsum("kld,kl->kd", z, w)
                if target is not None:
                    rhs += l2[rows, np.newaxis] * (target[rows] @ q)
                x = np.linalg.solve(system, rhs[..., np.newaxis])[..., 0]
            else:
                scaled = z / diagonal[:, np.newaxis, :]
                system = c[..., np.newaxis] * (scaled @ z.transpose(0, 2, 1))
                system[:, np.arange(length), np.arange(length)] += 1.0
                a = np.linalg.solve(system, w[..., np.newaxis])[..., 0]
                x = np.einsum("kld,kl->kd", scaled, a)
            solved[rows] = x
    return solved @ q.T


def objective(users, movies, ratings: Ratings, weights, user_l2, movie_l2, alpha0, movie_scale) -> float:
    scores = np.einsum("nd,nd->n", users[ratings.users], movies[ratings.columns])
    whole = np.sum((users.T @ users) * (movies.T @ (movies * movie_scale[:, np.newaxis])))
    rated = np.sum(weights * (1.0 - scores) ** 2 - alpha0 * movie_scale[ratings.columns] * scores**2)
    l2 = np.sum(user_l2 * np.sum(users**2, 1)) + np.sum(movie_l2 * np.sum(movies**2, 1))
    return float(rated + alpha0 * whole + l2)


def fit(
    ratings: Ratings,
    setting: Setting,
    seed: int = 1,
    max_passes: int = 30,
    tolerance: float = 1e-4,
    pull: float = 0.0,
):
    """The user and movie tables (float64) at the minimum of the loss, by exact alternating least squares
    from Keras's initialisation, stopping after the first pass that changes the loss by under TOLERANCE of
    it (0: after MAX_PASSES). With a PULL (round3.py), each user's L2 pulls towards PULL times the mean of
    their rated movies' vectors, taken from the movie table the pass starts with. Returns (users, movies,
    passes)."""
    weights = rating_weights(ratings, setting)
    users_side = group(ratings.users, ratings.columns, weights, ratings.num_users)
    movies_side = group(ratings.columns, ratings.users, weights, ratings.num_movies)
    user_l2 = row_l2(users_side.counts, ratings.num_movies, setting)
    movie_l2 = row_l2(movies_side.counts, ratings.num_users, setting) * setting.movie_l2_ratio
    counts = movies_side.counts
    movie_scale = np.ones(len(counts))
    if setting.beta:
        movie_scale[counts > 0] = (counts[counts > 0] / counts[counts > 0].mean()) ** setting.beta
    rng = np.random.default_rng(seed)
    movies = rng.uniform(-INIT_SCALE, INIT_SCALE, (ratings.num_movies, setting.dim))
    movies[movies_side.counts == 0] = 0.0
    users = np.zeros((ratings.num_users, setting.dim))
    ratings_of_user = np.maximum(users_side.counts, 1)[:, np.newaxis]
    loss, target = math.inf, None
    for passes in range(1, max_passes + 1):
        if pull:
            target = np.zeros_like(users)
            np.add.at(target, ratings.users, movies[ratings.columns])
            target *= pull / ratings_of_user
        users = solve_side(
            movies, users_side, user_l2, setting.alpha0, other_scale=movie_scale, target=target
        )
        movies = solve_side(users, movies_side, movie_l2, setting.alpha0, row_scale=movie_scale)
        new_loss = objective(users, movies, ratings, weights, user_l2, movie_l2, setting.alpha0, movie_scale)
        if abs(loss - new_loss) < tolerance * abs(new_loss):
            break
        loss = new_loss
    return users, movies, passes


# 3. Metrics ---------------------------------------------------------------------------------------------


def rated_matrix(ratings: Ratings) -> np.ndarray:
    matrix = np.zeros((ratings.num_users, ratings.num_movies), bool)
    matrix[ratings.users, ratings.columns] = True
    return matrix


def metrics(users: np.ndarray, movies: np.ndarray, fitted: Ratings, held_out: Ratings) -> dict:
    """NDCG@10 and Recall@10 with the fitted movies left out (as evaluation.ranking_metrics, whose code
    this repeats), and top_100 as TFRS's FactorizedTopK counts it: a held-out rating (u, m) is a hit when
    m scores at least the 100th highest score of u over the whole catalogue, nothing left out."""
    scores = users.astype(np.float32) @ movies.astype(np.float32).T
    seen, relevant = rated_matrix(fitted), rated_matrix(held_out)
    relevant &= ~seen
    ranked = np.argsort(np.where(seen, np.inf, -scores), axis=1, kind="stable")[:, :CUTOFF]
    hits = np.take_along_axis(relevant, ranked, axis=1)
    num_relevant = relevant.sum(axis=1)
    some = num_relevant > 0
    discounts = 1.0 / np.log2(np.arange(2, CUTOFF + 2))
    dcg = (hits * discounts).sum(axis=1)[some]
    ideal = np.cumsum(discounts)[np.minimum(num_relevant[some], CUTOFF) - 1]
    kth = np.partition(scores, -TOP_K_ACCURACY, axis=1)[:, -TOP_K_ACCURACY]
    top = scores[held_out.users, held_out.columns] >= kth[held_out.users]
    return {
        "ndcg": float((dcg / ideal).mean()),
        "recall": float((hits.sum(axis=1)[some] / num_relevant[some]).mean()),
        "top_100": float(top.mean()),
    }
