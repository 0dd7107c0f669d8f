"""The tuned recipe: implicit ALS's loss over the whole catalogue, solved by alternating least squares.

The tutorial trains on an in-batch softmax: each rating's movie must outscore the other movies of its
batch. The tuned recipe asks instead that every user's score for every movie of the catalogue be near 1
if they rated it and near 0 if not (Hu, Koren and Volinsky's implicit ALS), each rating weighted by its
stars. All movies are then negatives of every user, so there is no sampling bias to correct, and the
loss is a quadratic in each user's vector and in each movie's: beyond/alternating_least_squares.py
solves it a side at a time, in a handful of passes at any size. It was chosen on validation folds
carved from the training data; docs/tuned-recipe.md has the search and its numbers.

    1. TunedRecipe and TUNED: the tutorial's Recipe, plus ALS's weights and L2, and when it has converged
    2. ImplicitALSModel: the core's MovieLensModel, training on implicit_als_loss
    3. rating_weights: each rating's weight, from its stars
    4. build_model and train: the towers for either recipe, and the solver or the core's train()

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


@dataclasses.dataclass(frozen=True)
class TunedRecipe(recommend.Recipe):
    # L2 weight decay on both embedding tables: ALS's lambda, counted once a pass (see OncePerPass).
    embedding_l2: float = 0.0
    # In implicit ALS's loss a rated movie's error counts this many times an unrated one's: a rating is a
    # clear sign of taste, while a movie not rated may only be one the user never came across.
    rated_weight: float = 6.0
    # A rating's weight grows with its stars, 1 + (rated_weight - 1) x stars / average stars: rated_weight
    # on average. The held-out test still counts any rating as a hit.
    weight_by_stars: bool = False
    # Training stops after the first pass that changes the loss by less than this share of it; 0 never
    # stops early. `epochs` is then the most passes it may take.
    converged_below: float = 0.0


TUNED = TunedRecipe(
    embedding_l2=50.0,
    rated_weight=6.0,
    weight_by_stars=True,
    # Alternating least squares (beyond/alternating_least_squares.py): each side nearly solved in turn.
    optimizer="als",
    epochs=15,
    converged_below=0.001,
)
# The same loss trained by gradient steps, which tf.distribute can share out (--tuned --optimizer adam).
TUNED_BY_ADAM = dataclasses.replace(
    TUNED,
    # One batch holds every rating of MovieLens 100k, so each step is gradient descent on the whole loss.
    # Adam's steps do not shrink as gradients add up, so it converges where Adagrad's become too small.
    optimizer="adam",
    batch_size=100_000,
    shuffle_each_epoch=True,
    learning_rate=0.05,
    epochs=100,
    converged_below=0.0,  # its 100 steps are what docs/tuned-recipe.md measured
)


class OncePerPass(tf.keras.regularizers.L2):
    """ALS's L2 penalty, lambda |W|^2, counted once a pass. Keras adds a regularizer to every step's loss,
    so with n batches a pass it would count n times, and on 251 batches it pins every embedding to zero:
    each step adds its share, 1 / n, instead."""

    share = 1.0  # 1 / (batches a pass), set before training (ImplicitALSModel.features)

    def __call__(self, weights):
        return 2.0 * (self.l2 * self.share) * tf.nn.l2_loss(weights)


class ImplicitALSModel(recommend.MovieLensModel):
    """The core's two towers and retrieval task, trained on implicit ALS's loss over CATALOGUE."""

    def __init__(self, user_model, movie_model, task, catalogue, recipe: TunedRecipe, regularizer=None):
        super().__init__(user_model, movie_model, task)
        self.regularizer = regularizer
        self.catalogue = tf.constant(catalogue, tf.string)
        self.recipe = recipe

    @property
    def rated_weight(self) -> float:
        """A rated movie's average weight: each rating brings its own while training, while a new viewer's
        liked titles, which have no stars, each get this one (see beyond/movie_space.py)."""
        return self.recipe.rated_weight

    def training_loss(self, features):
        return implicit_als_loss(
            self.user_model,
            self.movie_model,
            self.catalogue,
            features["user_id"],
            features["movie_title"],
            features["user_share"],
            features["rated_weight"],
        )

    def features(self, data: recommend.MovieLens):
        """The core's features, plus each rating's weight and its share of its user's whole-catalogue
        term: 1 / (the user's number of ratings). Sets each step's share of the L2 for DATA's batches."""
        if self.regularizer is not None:
            self.regularizer.share = 1.0 / math.ceil(data.num_ratings / self.recipe.batch_size)
        text = recommend.rating_features(data)
        user_share = 1.0 / np.maximum(np.bincount(data.rating_users, minlength=len(data.users)), 1)
        user_share = tf.constant(user_share, tf.float32)
        rating_users = tf.constant(data.rating_users)
        rated_weight = tf.constant(rating_weights(data, self.recipe))
        return lambda rows: {
            **text(rows),
            "user_share": tf.gather(user_share, tf.gather(rating_users, rows)),
            "rated_weight": tf.gather(rated_weight, rows),
        }

    def describe_loss(self, data: recommend.MovieLens) -> str:
        stars = ", each rating weighted by its stars" if self.recipe.weight_by_stars else ""
        return f", implicit ALS's loss over all {len(data.catalogue):,} titles{stars}"


def implicit_als_loss(
    user_model, movie_model, catalogue, user_ids, movie_titles, user_shares, rated_weights
) -> tf.Tensor:
    """Implicit ALS's loss (Hu, Koren and Volinsky, 2008) for a batch of ratings: every score s = user .
    movie should be 1 for the movies a user rated and 0 for the rest of the catalogue, and a rated movie's
    squared error counts its rating's weight w times:
        sum over rated (u, m) of w (1 - s)^2  +  sum over unrated (u, m) of s^2.

    The second sum runs over almost every user and movie pair, yet needs no pair at all. It equals the sum
    over all pairs minus the rated ones, and a user's sum of s^2 over the whole catalogue is u . (G u)
    with G = (sum over movies of e e^T), one embedding_dim x embedding_dim matrix for the whole catalogue.
    So each rating adds w (1 - s)^2 - s^2, and each user adds u . (G u) once. A batch need not hold all
    of a user's ratings: each adds its share of the user's term, so that over a pass it counts once.
    """
    users, user_rows = tf.unique(user_ids)
    user_embeddings = user_model(users)
    catalogue_embeddings = movie_model(catalogue)
    gram = tf.matmul(catalogue_embeddings, catalogue_embeddings, transpose_a=True)
    whole_catalogue = tf.reduce_sum(tf.matmul(user_embeddings, gram) * user_embeddings, axis=1)
    scores = tf.reduce_sum(tf.gather(user_embeddings, user_rows) * movie_model(movie_titles), axis=1)
    rated = rated_weights * tf.square(1.0 - scores) - tf.square(scores)
    return tf.reduce_sum(rated + user_shares * tf.gather(whole_catalogue, user_rows))


def rating_weights(data: recommend.MovieLens, recipe: TunedRecipe) -> np.ndarray:
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


def build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue, recipe) -> recommend.MovieLensModel:
    """The core's build_model for the tutorial's recipe; for a TunedRecipe, the same towers with its L2,
    trained on implicit ALS's loss."""
    if not isinstance(recipe, TunedRecipe):
        return recommend.build_model(user_ids_vocabulary, movie_titles_vocabulary, catalogue, recipe)
    # Under a distribution strategy (--distribute) every replica adds the L2 penalty to its own loss and
    # the replicas' gradients are summed, so each adds its share.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    # Alternating least squares adds its L2 to each system it solves; gradient steps need the regularizer.
    needs_regularizer = recipe.embedding_l2 > 0 and recipe.optimizer != "als"
    regularizer = OncePerPass(recipe.embedding_l2 / replicas) if needs_regularizer else None
    user_model = recommend.tower(user_ids_vocabulary, recipe.embedding_dim, regularizer)
    movie_model = recommend.tower(movie_titles_vocabulary, recipe.embedding_dim, regularizer)
    task = recommend.retrieval_task(movie_model, catalogue)
    return ImplicitALSModel(user_model, movie_model, task, catalogue, recipe, regularizer)


def train(model, data: recommend.MovieLens, recipe: recommend.Recipe, seed: int, callbacks=()) -> None:
    """The core's train(), or for the tuned recipe's alternating least squares, its solver."""
    if isinstance(recipe, TunedRecipe) and recipe.optimizer == "als":
        # The weights are made in the call, so that once the solver has its own copy nothing holds them.
        alternating_least_squares.train(
            model, data, rating_weights(data, recipe), recipe.embedding_l2, recipe.epochs, callbacks
        )
    else:
        recommend.train(model, data, recipe, seed, callbacks)


def describe_training(recipe: recommend.Recipe) -> str:
    """How the recipe trains, for the progress line that starts training."""
    converged_below = getattr(recipe, "converged_below", 0.0)
    until = f", stopping at the first that changes the loss by under {converged_below * 100:g}%"
    until = until if converged_below else ""
    epochs = f"{recipe.epochs} epoch{'s' if recipe.epochs > 1 else ''}"
    at_most = "at most " if converged_below else ""
    if recipe.optimizer == "als":
        return f"{at_most}{epochs} of alternating least squares{until}"
    optimizer = f"{recipe.optimizer.capitalize()} {recipe.learning_rate:g}"
    return f"{at_most}{epochs}{until}, batches of {recipe.batch_size:,}, {optimizer}"
