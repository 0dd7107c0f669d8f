"""The recipes, side by side: the tutorial's and the tuned one, and the one place that chooses between them.

The core's Recipe holds the settings its build_model() and train() read. A recipe here is that Recipe
plus everything else that differs from one recipe to the next, so that no other module asks which
recipe it has; every difference between the tutorial's recipe and the tuned one is in this file:

    1. build_model and train: the towers and how they are fitted (the core's steps 3 and 4, or implicit
       ALS's loss of beyond/tuned.py, solved by beyond/alternating_least_squares.py)
    2. describe: what the line that starts training says
    3. memory_bytes: what training holds at once, for the check before it starts (beyond/big_data.py)
    4. fold_in: how a new viewer who names films they liked (--liked) gets a vector
    5. what to change when training diverges or runs out of memory
    6. choose: the recipe --tuned and --optimizer ask for

    python recommend.py --user 42                            # TUTORIAL: the TFRS quickstart's settings
    python recommend.py --user 42 --tuned                    # TUNED: implicit ALS's loss, solved
    python recommend.py --user 42 --tuned --optimizer adam   # TUNED_BY_ADAM: the same loss, by gradients
"""

import dataclasses
import functools
import typing

import numpy as np
import tensorflow as tf

import recommend
from beyond import alternating_least_squares, big_data, guards, movie_space, tuned

# The tutorial's recipe has no L2: stopping after three epochs keeps its vectors short. Fitting a new viewer
# to convergence has no such stop, so this pull towards zero stands in: the L2 that served the softmax
# best on validation (docs/tuned-recipe.md, stage 6).
FOLD_IN_DEFAULT_L2 = 0.3
# The numbers each optimizer keeps for every weight: Adagrad its squared gradients' sum, Adam two moments.
OPTIMIZER_SLOTS = {"adagrad": 1, "adam": 2}


@dataclasses.dataclass(frozen=True)
class TutorialRecipe(recommend.Recipe):
    """The TFRS quickstart's recipe: the in-batch softmax, by Adagrad 0.5 (the core's defaults)."""

    name: typing.ClassVar[str] = "tutorial"
    # Whether gradient steps compute implicit ALS's loss over the catalogue, not the in-batch softmax.
    implicit_als_loss: typing.ClassVar[bool] = False

    def build_model(
        self, user_ids_vocabulary, movie_titles_vocabulary, catalogue
    ) -> recommend.MovieLensModel:
        return recommend.build_model(
            user_ids_vocabulary, movie_titles_vocabulary, catalogue, self.embedding_dim
        )

    def train(self, model, data: recommend.MovieLens, seed: int, callbacks=()) -> None:
        recommend.train(model, data, self, seed, callbacks)

    def describe(self, data: recommend.MovieLens) -> str:
        epochs = f"{self.epochs} epoch{'s' if self.epochs > 1 else ''}"
        return (
            f"{epochs}, batches of {self.batch_size:,}, {self.optimizer.capitalize()} {self.learning_rate:g}"
        )

    def memory_bytes(self, sizes: big_data.Sizes) -> int:
        """What training holds at once, in bytes, for the data's SIZES (see beyond/big_data.py)."""
        return big_data.RUNTIME_BYTES + big_data.gradient_training_bytes(
            sizes, self.embedding_dim, self.batch_size, OPTIMIZER_SLOTS[self.optimizer], self.shuffle_each_epoch,
            implicit_als=self.implicit_als_loss,
        )  # fmt: skip

    def describe_sizes(self, num_ratings: int) -> str:
        """The sizes that decide the memory training needs, as the options that set them."""
        return f"--embedding-dim {self.embedding_dim} and --batch-size {self.batch_size}"

    def fold_in(self, model, data: recommend.MovieLens) -> movie_space.FoldIn:
        """How a new viewer is fitted (beyond/movie_space.py), for MODEL trained on DATA: to the softmax the
        tutorial's recipe trains on, with an L2.

        Training applies the recipe's L2 at every step: with the softmax recipes' batches, about 25 times
        an epoch, against each of a user's ratings once an epoch. Counted that way, a viewer who names
        three films would be held to a vector so short that the catalogue's hits came first whatever
        they named. But three films named are a sample of someone's taste, not all they have ever seen,
        so the coefficient is applied once."""
        unrated = np.ones(len(data.catalogue), np.float32)
        return movie_space.FoldIn(FOLD_IN_DEFAULT_L2, 0.0, 0.0, model_rows(model.movie_model), unrated, 0.0)

    def divergence_advice(self) -> str:
        smaller = min(self.learning_rate / 10, STEADY_LEARNING_RATES[self.optimizer])
        return (
            f"The likely cause is the learning rate {self.learning_rate:g}, too large for these settings; try "
            f"a smaller --learning-rate, such as {smaller:g}."
        )

    def sizes_to_shrink(self) -> str:
        return "--batch-size or --embedding-dim"

    def unused_options(self) -> tuple[tuple[str, ...], str]:
        """Options that do not act on how this recipe trains, and why: given, they are noted as ignored."""
        return (), ""


TUTORIAL = TutorialRecipe()


@dataclasses.dataclass(frozen=True)
class TunedRecipe(TutorialRecipe):
    """Implicit ALS's loss over the whole catalogue (beyond/tuned.py), each rating weighted by its stars,
    solved by alternating least squares until it has converged, or trained by Adam's steps."""

    name: typing.ClassVar[str] = "tuned"
    implicit_als_loss: typing.ClassVar[bool] = True

    # L2 weight decay on both embedding tables: ALS's lambda, counted once a pass (see tuned.OncePerPass).
    # A row's lambda is embedding_l2 (n + N)^l2_frequency_power, n its ratings and N the other table's rows
    # (tuned.RowTerms): 0 is the same lambda for every row.
    embedding_l2: float = 0.0
    l2_frequency_power: float = 0.0
    # A user's squared score for a movie they did not rate weighs (the movie's ratings / the average
    # movie's)^unrated_popularity_power: 0 weighs every unrated movie 1 (tuned.RowTerms).
    unrated_popularity_power: float = 0.0
    # A user's L2 holds their vector near rated_titles_pull times the mean of their rated movies' vectors
    # rather than near 0, so that what little a user's ratings say is read against what their films share
    # (tuned.RowTerms): 0 pulls towards 0.
    rated_titles_pull: float = 0.0
    # In implicit ALS's loss a rated movie's error counts this many times an unrated one's: a rating is a
    # clear sign of taste, while a movie not rated may only be one the user never came across.
    rated_weight: float = 6.0
    # A rating's weight grows with its stars, 1 + (rated_weight - 1) x stars / average stars: rated_weight
    # on average. The held-out test still counts any rating as a hit.
    weight_by_stars: bool = False
    # Training stops after the first pass that changes the loss by less than this share of it; 0 never
    # stops early. `epochs` is then the most passes it may take.
    converged_below: float = 0.0

    def build_model(
        self, user_ids_vocabulary, movie_titles_vocabulary, catalogue
    ) -> recommend.MovieLensModel:
        """The core's towers, trained on implicit ALS's loss over the catalogue, with the recipe's L2."""
        # Under a distribution strategy (--distribute) every replica adds the L2 penalty to its own loss and
        # the replicas' gradients are summed, so each adds its share.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # Alternating least squares adds its L2 to each system it solves; gradient steps need the regularizer.
        needs_regularizer = self.embedding_l2 > 0 and not self.solved
        # One for each tower: each row's lambda depends on its table (tuned.RowTerms).
        regularizers = [
            tuned.OncePerPass(self.embedding_l2 / replicas) if needs_regularizer else None for _ in range(2)
        ]
        user_model = recommend.tower(user_ids_vocabulary, self.embedding_dim, regularizers[0])
        movie_model = recommend.tower(movie_titles_vocabulary, self.embedding_dim, regularizers[1])
        task = recommend.retrieval_task(movie_model, catalogue)
        return tuned.ImplicitALSModel(user_model, movie_model, task, catalogue, self, regularizers)

    def train(self, model, data: recommend.MovieLens, seed: int, callbacks=()) -> None:
        if self.converged_below:
            # After the callbacks that put the epoch's loss per rating in the logs (see guards.EpochProgress).
            callbacks = [*callbacks, guards.StopWhenConverged(self.converged_below)]
        if not self.solved:
            recommend.train(model, data, self, seed, callbacks)
            return
        # The weights are made in the call, so that once the solver has its own copy nothing holds them.
        terms_for = functools.partial(tuned.row_terms, self)
        alternating_least_squares.solve_tables(
            model, data, tuned.rating_weights(data, self), terms_for, self.epochs, callbacks
        )

    @property
    def solved(self) -> bool:
        """Whether alternating least squares trains it, rather than gradient steps."""
        return self.optimizer == "als"

    def describe(self, data: recommend.MovieLens) -> str:
        until = f", stopping at the first that changes the loss by under {self.converged_below * 100:g}%"
        until = until if self.converged_below else ""
        at_most = "at most " if self.converged_below else ""
        epochs = f"{at_most}{self.epochs} epoch{'s' if self.epochs > 1 else ''}"
        training = f"{epochs} of alternating least squares{until}"
        if not self.solved:
            training = f"{epochs}{until}, batches of {self.batch_size:,}, {self.optimizer.capitalize()} {self.learning_rate:g}"
        stars = ", each rating weighted by its stars" if self.weight_by_stars else ""
        return f"{training}, implicit ALS's loss over all {len(data.catalogue):,} titles{stars}"

    def memory_bytes(self, sizes: big_data.Sizes) -> int:
        if self.solved:
            return big_data.RUNTIME_BYTES + alternating_least_squares.memory_bytes(sizes, self.embedding_dim)
        return super().memory_bytes(sizes)

    def describe_sizes(self, num_ratings: int) -> str:
        if not self.solved:
            return super().describe_sizes(num_ratings)
        return f"--embedding-dim {self.embedding_dim}" + (
            f" on {num_ratings:,} ratings" if num_ratings else ""
        )

    def sizes_to_shrink(self) -> str:
        return "--embedding-dim" if self.solved else super().sizes_to_shrink()

    def unused_options(self) -> tuple[tuple[str, ...], str]:
        if not self.solved:
            return (), ""
        return ("--learning-rate", "--batch-size"), (
            "alternating least squares takes no steps down a gradient and no batches; it solves for each "
            "user and each movie in turn"
        )

    def divergence_advice(self) -> str:
        if not self.solved:
            return super().divergence_advice()
        return (
            "Alternating least squares takes no learning rate, and its systems cannot diverge with a positive "
            "L2: please report this, with the command; --optimizer adam trains the same loss another way."
        )

    def fold_in(self, model, data: recommend.MovieLens) -> movie_space.FoldIn:
        """A new viewer fitted to implicit ALS's loss, by the rules every user was (tuned.RowTerms): their
        L2 counted once as a pass counts it, and each movie's unrated weight from its ratings in DATA. A
        liked film, which has no stars, weighs as an average rating."""
        return movie_space.FoldIn(
            self.embedding_l2,
            self.rated_weight,
            self.l2_frequency_power,
            model_rows(model.movie_model),
            tuned.movie_unrated_weights(self, big_data.ratings_per_title(data)),
            self.rated_titles_pull,
        )


TUNED = TunedRecipe(
    embedding_l2=1.48,
    l2_frequency_power=0.5,
    unrated_popularity_power=0.1,
    rated_titles_pull=1.0,
    rated_weight=6.0,
    weight_by_stars=True,
    # Alternating least squares (beyond/alternating_least_squares.py): each side nearly solved in turn.
    optimizer="als",
    # MovieLens 100k converges in about 15 passes; the validation search ran at most 15 (stage 20) and
    # 20 (stage 21). 20 leaves room for 1M and 25M, which take 10 to 15.
    epochs=20,
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
    converged_below=0.0,  # a fixed 100 steps, the number docs/tuned-recipe.md measured
)


# Learning rates that train steadily, to suggest after a divergence: the quickstart's for Adagrad, the
# tuned recipe's for Adam, whose steps do not shrink as Adagrad's do and so must start smaller.
STEADY_LEARNING_RATES = {"adagrad": TUTORIAL.learning_rate, "adam": TUNED_BY_ADAM.learning_rate}


def model_rows(tower) -> int:
    """The rows of a tower's embedding table: its vocabulary's, and the unknown key's."""
    return tower.layers[-1].embeddings.shape[0]


def choose(tuned_recipe: bool, optimizer: str | None) -> TutorialRecipe:
    """The recipe --tuned and --optimizer ask for, before the other flags override its settings."""
    if not tuned_recipe:
        return TUTORIAL
    return TUNED if optimizer in (None, "als") else TUNED_BY_ADAM
