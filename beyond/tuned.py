"""The tuned recipe's loss: implicit ALS's, over the whole catalogue, each rating weighted by its stars.

The tutorial trains on an in-batch softmax: each rating's movie must outscore the other movies of its
batch. The tuned recipe asks instead that every user's score for every movie of the catalogue be near 1
if they rated it and near 0 if not (Hu, Koren and Volinsky's implicit ALS), each rating weighted by its
stars, each user's and movie's vector held by an L2 that grows with its ratings (a user's held near the
mean of the movies they rated, a movie's near 0), and a movie left unrated counting more the more
popular it is. All movies are then negatives of every user, so there is no sampling bias to correct, and
the loss is a quadratic in each user's vector and in each movie's: beyond/alternating_least_squares.py
solves it a side at a time, in a handful of passes at any size. The recipe's settings, and how it
builds and trains its model, are in beyond/recipes.py; docs/tuned-recipe.md has the validation search
that chose them. This module holds the loss itself:

    1. implicit_als_loss: the loss for a batch of ratings, without any users x movies matrix
    2. ImplicitALSModel: the core's MovieLensModel, training on implicit_als_loss
    3. OncePerPass: the L2, counted once a pass however many batches the pass has
    4. RowTerms: each row's L2 and where it pulls, and each movie's weight when unrated
    5. rating_weights: each rating's weight, from its stars

    python recommend.py --user 42 --tuned
    python recommend.py --evaluate --tuned
    python recommend.py --evaluate --tuned --optimizer adam    # the same loss by Adam's steps
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

import recommend
from beyond import alternating_least_squares


class OncePerPass(tf.keras.regularizers.L2):
    """ALS's L2 penalty, lambda |W - T|^2, counted once a pass. Keras adds a regularizer to every step's
    loss, so with n batches a pass it would count n times, which on MovieLens 25M pins every embedding to
    zero (docs/tuned-recipe.md): each step adds its share, 1 / n, instead. Each row's lambda is l2 times its
    own scale (RowTerms), once the data is known. The target T is 0, or for the user table each user's
    pull times the mean of their rated movies' vectors: a product with the movie table, held fixed within
    the step as alternating least squares holds it within a side's solve."""

    share = 1.0  # 1 / (batches a pass), set before training (ImplicitALSModel.features)
    row_scale = None  # each row's lambda / l2, set with the share; None: 1 for every row
    # T as (rated_means_matrix's sparse matrix, the movie table), their product; None: T = 0
    pulled_towards = None

    def __call__(self, weights):
        if self.pulled_towards is not None:
            rated_means, movie_table = self.pulled_towards
            weights = weights - tf.stop_gradient(tf.sparse.sparse_dense_matmul(rated_means, movie_table))
        squares = (
            tf.square(weights)
            if self.row_scale is None
            else self.row_scale[:, tf.newaxis] * tf.square(weights)
        )
        return (self.l2 * self.share) * tf.reduce_sum(squares)


@dataclasses.dataclass(frozen=True)
class RowTerms:
    """The loss's terms that differ from row to row, over the rows of the two embedding tables:

        user_l2, movie_l2   each row's L2 lambda (row_l2): embedding_l2 (n + N)^l2_frequency_power, n its
                            ratings and N the other table's rows (Rendle et al. 2021); a power of 0 is one
                            lambda for every row
        unrated_weight      each movie row's weight c on the squared score of a user who did not rate it:
                            (n / the average n of rated movies)^unrated_popularity_power, so that a popular
                            movie left unrated says more against it than an obscure one does (He et al.
                            2016); a power of 0 weighs every movie 1
        rated_titles_pull   p: a user's L2 holds their vector near p times the mean of their rated movies'
                            vectors, not near 0 (SVD++'s bag of rated titles, tied to the movie table); 0
                            is the plain L2. The movies' L2 pulls towards 0.

    Rows nobody rated get an unrated weight of 1, which the solver never uses: it keeps their vectors 0."""

    user_l2: np.ndarray
    movie_l2: np.ndarray
    unrated_weight: np.ndarray
    rated_titles_pull: float = 0.0


def row_terms(
    recipe, user_rows: np.ndarray, movie_rows: np.ndarray, user_table_size: int, movie_table_size: int
) -> RowTerms:
    """RECIPE's RowTerms for ratings whose rows in the two tables are USER_ROWS and MOVIE_ROWS."""
    user_counts = np.bincount(user_rows, minlength=user_table_size)
    movie_counts = np.bincount(movie_rows, minlength=movie_table_size)
    l2, power = recipe.embedding_l2, recipe.l2_frequency_power
    return RowTerms(
        row_l2(l2, power, user_counts, movie_table_size).astype(np.float32),
        row_l2(l2, power, movie_counts, user_table_size).astype(np.float32),
        movie_unrated_weights(recipe, movie_counts),
        recipe.rated_titles_pull,
    )


def row_l2(l2, power, ratings, other_table_rows):
    """A row's L2 lambda, l2 (its ratings + the other table's rows)^power, in numpy or in TensorFlow: for
    training's rows (row_terms), and for a new viewer as for a user with as many ratings as titles named
    (beyond/serving.py)."""
    return l2 * (ratings + other_table_rows) ** power


def movie_unrated_weights(recipe, movie_counts: np.ndarray) -> np.ndarray:
    """Each movie's unrated weight (RowTerms) from its number of ratings, MOVIE_COUNTS."""
    weights = np.ones(len(movie_counts), np.float32)
    rated = movie_counts > 0
    if recipe.unrated_popularity_power and rated.any():
        popularity = movie_counts[rated] / movie_counts[rated].mean()
        weights[rated] = popularity**recipe.unrated_popularity_power
    return weights


class ImplicitALSModel(recommend.MovieLensModel):
    """The core's two towers and retrieval task, trained on implicit ALS's loss over CATALOGUE; the L2 of
    each tower is its REGULARIZERS' (OncePerPass, or None)."""

    def __init__(self, user_model, movie_model, task, catalogue, recipe, regularizers=(None, None)):
        super().__init__(user_model, movie_model, task)
        self.regularizers = regularizers
        self.catalogue = tf.constant(catalogue, tf.string)
        self.recipe = recipe
        self.catalogue_unrated_weight = tf.ones(len(catalogue))  # set for the data (features)

    def training_loss(self, features):
        return implicit_als_loss(
            self.user_model,
            self.movie_model,
            self.catalogue,
            self.catalogue_unrated_weight,
            features["user_id"],
            features["movie_title"],
            features["user_share"],
            features["rated_weight"],
            features["unrated_weight"],
        )

    def features(self, data: recommend.MovieLens):
        """The core's features, plus each rating's weight, its movie's unrated weight and its share of its
        user's whole-catalogue term: 1 / (the user's number of ratings). Sets each step's share of the L2
        for DATA's batches, and the terms that differ from row to row (RowTerms) for DATA's ratings."""
        user_rows, movie_rows = alternating_least_squares.rating_rows(self, data)
        tables = self.user_model.layers[-1].embeddings, self.movie_model.layers[-1].embeddings
        terms = row_terms(self.recipe, user_rows, movie_rows, *(table.shape[0] for table in tables))
        for regularizer, row_l2 in zip(self.regularizers, (terms.user_l2, terms.movie_l2)):
            if regularizer is not None:
                regularizer.share = 1.0 / math.ceil(data.num_ratings / self.recipe.batch_size)
                regularizer.row_scale = tf.constant(row_l2 / self.recipe.embedding_l2)
        user_share = 1.0 / np.maximum(np.bincount(data.rating_users, minlength=len(data.users)), 1)
        if self.regularizers[0] is not None and terms.rated_titles_pull:
            sizes = [table.shape[0] for table in tables]
            rating_shares = terms.rated_titles_pull * user_share[data.rating_users]
            self.regularizers[0].pulled_towards = (
                rated_means_matrix(user_rows, movie_rows, rating_shares, sizes),
                tables[1],
            )
        catalogue_rows = self.movie_model.layers[0](self.catalogue).numpy()
        self.catalogue_unrated_weight = tf.constant(terms.unrated_weight[catalogue_rows])
        text = recommend.rating_features(data)
        user_share = tf.constant(user_share, tf.float32)
        rating_users = tf.constant(data.rating_users)
        rated_weight = tf.constant(rating_weights(data, self.recipe))
        unrated_weight = tf.constant(terms.unrated_weight[movie_rows])
        return lambda rows: {
            **text(rows),
            "user_share": tf.gather(user_share, tf.gather(rating_users, rows)),
            "rated_weight": tf.gather(rated_weight, rows),
            "unrated_weight": tf.gather(unrated_weight, rows),
        }


def rated_means_matrix(user_rows, movie_rows, rating_shares, table_sizes):
    """A sparse (user table rows x movie table rows) matrix holding each rating's share at its user's and
    movie's rows: with the shares pull / (the user's ratings), its product with the movie table is each
    user's pull times the mean of their rated movies' vectors."""
    return tf.sparse.reorder(
        tf.SparseTensor(
            np.stack([user_rows, movie_rows], axis=1).astype(np.int64),
            rating_shares.astype(np.float32),
            table_sizes,
        )
    )


def implicit_als_loss(
    user_model,
    movie_model,
    catalogue,
    catalogue_unrated_weight,
    user_ids,
    movie_titles,
    user_shares,
    rated_weights,
    unrated_weights,
) -> tf.Tensor:
    """Implicit ALS's loss (Hu, Koren and Volinsky, 2008) for a batch of ratings: every score s = user .
    movie should be 1 for the movies a user rated and 0 for the rest of the catalogue, and a rated movie's
    squared error counts its rating's weight w times, an unrated one's its movie's unrated weight c times:
        sum over rated (u, m) of w (1 - s)^2  +  sum over unrated (u, m) of c_m s^2.

    The second sum runs over almost every user and movie pair, yet needs no pair at all. It equals the sum
    over all pairs minus the rated ones, and a user's sum of c s^2 over the whole catalogue is u . (G u)
    with G = (sum over movies of c e e^T), one embedding_dim x embedding_dim matrix for the whole
    catalogue. So each rating adds w (1 - s)^2 - c s^2, and each user adds u . (G u) once. A batch need
    not hold all of a user's ratings: each adds its share of the user's term, so that over a pass it
    counts once.
    """
    users, user_rows = tf.unique(user_ids)
    user_embeddings = user_model(users)
    catalogue_embeddings = movie_model(catalogue)
    gram = tf.matmul(
        catalogue_embeddings * catalogue_unrated_weight[:, tf.newaxis], catalogue_embeddings, transpose_a=True
    )
    whole_catalogue = tf.reduce_sum(tf.matmul(user_embeddings, gram) * user_embeddings, axis=1)
    scores = tf.reduce_sum(tf.gather(user_embeddings, user_rows) * movie_model(movie_titles), axis=1)
    rated = rated_weights * tf.square(1.0 - scores) - unrated_weights * tf.square(scores)
    return tf.reduce_sum(rated + user_shares * tf.gather(whole_catalogue, user_rows))


def rating_weights(data: recommend.MovieLens, recipe) -> np.ndarray:
    """Each rating's weight in implicit ALS's loss: rated_weight, or, weighing by stars,
    1 + (rated_weight - 1) x stars / (the average stars of the ratings that have some).

    A rating whose stars are not a positive number (missing, or damaged) counts as an average one, as a
    new viewer's liked film does: weight rated_weight."""
    stars, rated_weight = data.rating_stars, recipe.rated_weight
    has_stars = np.isfinite(stars) & (stars > 0)
    if not recipe.weight_by_stars or not has_stars.any():
        return np.full(data.num_ratings, rated_weight, np.float32)
    average = np.float32(stars[has_stars].mean())
    weights = np.where(has_stars, stars, average)
    weights *= np.float32((rated_weight - 1.0) / average)
    weights += np.float32(1.0)
    return weights
