"""The recipes (beyond/recipes.py): which one the flags choose, and that each builds, trains, describes
and fits a new viewer its own way, so that no other module needs to ask which it has."""

import dataclasses

import numpy as np
import pytest

import recommend
from beyond import alternating_least_squares, recipes, tuned
from conftest import tiny_movielens


@pytest.mark.parametrize(
    "tuned_recipe, optimizer, chosen",
    [
        (False, None, recipes.TUTORIAL),
        (False, "adam", recipes.TUTORIAL),  # --optimizer then overrides the tutorial's own field
        (True, None, recipes.TUNED),
        (True, "als", recipes.TUNED),
        (True, "adam", recipes.TUNED_BY_ADAM),
        (True, "adagrad", recipes.TUNED_BY_ADAM),
    ],
)
def test_the_flags_choose_the_recipe(tuned_recipe, optimizer, chosen):
    assert recipes.choose(tuned_recipe, optimizer) is chosen


def test_the_tutorials_recipe_is_the_quickstarts():
    assert dataclasses.asdict(recipes.TUTORIAL) == dataclasses.asdict(recommend.Recipe())
    assert (recipes.TUTORIAL.embedding_dim, recipes.TUTORIAL.learning_rate) == (64, 0.5)
    assert (recipes.TUTORIAL.batch_size, recipes.TUTORIAL.epochs, recipes.TUTORIAL.optimizer) == (
        4096,
        3,
        "adagrad",
    )


def test_each_recipe_describes_how_it_trains():
    data = tiny_movielens()
    assert recipes.TUTORIAL.describe(data) == "3 epochs, batches of 4,096, Adagrad 0.5"
    assert recipes.TUNED.describe(data) == (
        "at most 20 epochs of alternating least squares, stopping at the first that changes the loss by "
        "under 0.1%, implicit ALS's loss over all 11 titles, each rating weighted by its stars"
    )
    assert recipes.TUNED_BY_ADAM.describe(data) == (
        "100 epochs, batches of 100,000, Adam 0.05, implicit ALS's loss over all 11 titles, each rating "
        "weighted by its stars"
    )
    one = dataclasses.replace(recipes.TUTORIAL, epochs=1)
    assert one.describe(data).startswith("1 epoch, ")


@pytest.mark.parametrize(
    "recipe, trainer",
    [
        (recipes.TUTORIAL, "core"),
        (recipes.TUNED_BY_ADAM, "core"),
        (recipes.TUNED, "solver"),
    ],
)
def test_each_recipe_trains_its_own_way(recipe, trainer, monkeypatch):
    called = []
    monkeypatch.setattr(recommend, "train", lambda *args: called.append("core"))
    monkeypatch.setattr(alternating_least_squares, "solve_tables", lambda *args: called.append("solver"))
    data = tiny_movielens()
    model = recipe.build_model(*recommend.build_vocabularies(data), data.catalogue)
    assert isinstance(model, tuned.ImplicitALSModel) == (recipe is not recipes.TUTORIAL)
    recipe.train(model, data, seed=0)
    assert called == [trainer]


def test_a_new_viewer_is_fitted_to_the_loss_the_recipe_trains():
    # The softmax recipes: the softmax, with the L2 that served it best, the same for any viewer.
    data = tiny_movielens()
    vocabularies = recommend.build_vocabularies(data)
    fold_in = recipes.TUTORIAL.fold_in(recipes.TUTORIAL.build_model(*vocabularies, data.catalogue), data)
    assert (fold_in.l2, fold_in.rated_weight, fold_in.l2_frequency_power) == (
        recipes.FOLD_IN_DEFAULT_L2,
        0,
        0,
    )
    assert (fold_in.unrated_weight == 1).all() and len(fold_in.unrated_weight) == 11
    # The tuned: its own loss, L2 rule and unrated weights. Of the tiny catalogue (Alpha 1 to 5, Beta 1 to
    # 5, Deja Vu) Alpha 5 has 3 ratings, Deja Vu 1 and the rest 4: 40 / 11 on average.
    tuned_recipe = recipes.TUNED
    fold_in = tuned_recipe.fold_in(tuned_recipe.build_model(*vocabularies, data.catalogue), data)
    assert (fold_in.l2, fold_in.rated_weight) == (tuned_recipe.embedding_l2, tuned_recipe.rated_weight)
    assert fold_in.l2_frequency_power == tuned_recipe.l2_frequency_power == 0.5
    assert fold_in.movie_table_rows == 11 + 1  # the movie table's rows: each title's, and the unknown title's
    ratings = np.array([4, 4, 4, 4, 3, 4, 4, 4, 4, 4, 1])
    expected = (ratings * 11 / 40) ** tuned_recipe.unrated_popularity_power
    np.testing.assert_allclose(fold_in.unrated_weight, expected, rtol=1e-6)


def test_options_a_recipe_does_not_use_are_named_with_the_reason():
    assert recipes.TUTORIAL.unused_options() == ((), "")
    assert recipes.TUNED_BY_ADAM.unused_options() == ((), "")
    flags, why = recipes.TUNED.unused_options()
    assert flags == ("--learning-rate", "--batch-size") and "alternating least squares" in why
