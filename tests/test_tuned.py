"""The tuned recipe (beyond/tuned.py): implicit ALS's loss and each rating's weight, worked out by hand,
and what it learns on the tiny dataset's planted tastes."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import recommend
from beyond import alternating_least_squares, movie_space, recipes, serving, tuned
from conftest import ALPHA, BETA, PLANTED_MOVIE, PLANTED_USER, from_ratings, tiny_movielens
from test_training import TINY_RECIPE, titles, top, train_tiny

# The tiny recipe of test_training.py, on implicit ALS's loss.
TINY_TUNED = recipes.TunedRecipe(**dataclasses.asdict(TINY_RECIPE))


def als_features(data):
    """What a model of the tuned recipe trains on, for rating numbers."""
    return recipes.TUNED.build_model(*recommend.build_vocabularies(data), data.catalogue).features(data)


def test_a_ratings_weight_grows_with_its_stars_and_averages_the_rated_weight():
    def weights(stars, recipe=recipes.TUNED):
        users = np.array([b"1", b"2", b"3", b"4"], dtype=object)
        movies = np.array([b"Heat"] * 4, dtype=object)
        data = from_ratings(users, movies, movies[:1], stars=np.array(stars, np.float32))
        return tuned.rating_weights(data, recipe)

    # Average 3 stars: 1 + 5 x 5/3, 1 + 5 x 3/3, 1 + 5 x 1/3; the weights average the recipe's 6.
    np.testing.assert_allclose(weights([5, 3, 1, 3]), [1 + 25 / 3, 6.0, 1 + 5 / 3, 6.0], rtol=1e-6)
    assert weights([5, 3, 1, 3]).mean() == pytest.approx(recipes.TUNED.rated_weight)
    unweighted = dataclasses.replace(recipes.TUNED, weight_by_stars=False)
    np.testing.assert_allclose(weights([5, 3, 1, 3], unweighted), [6.0] * 4)
    # A rating whose stars are not a positive number counts as an average one, and stays out of the
    # average (3 here), so that damaged stars can neither turn the loss negative nor move the others.
    np.testing.assert_allclose(weights([4, np.nan, -1, 2]), [1 + 20 / 3, 6.0, 6.0, 1 + 10 / 3], rtol=1e-6)
    np.testing.assert_allclose(weights([0, np.nan, 0, 0]), [6.0] * 4)


def test_implicit_als_loss_is_worked_out_by_hand():
    # Two users and three movies with fixed vectors; z is a movie nobody rated.
    user_model = fixed_tower({b"a": [1.0, 0.0], b"b": [0.0, 1.0]})
    movie_model = fixed_tower({b"x": [1.0, 0.0], b"y": [0.0, 2.0], b"z": [0.0, 0.0]})
    catalogue = tf.constant([b"x", b"y", b"z"])

    def loss(users, titles, shares, weights=None, unrated=(1.0, 1.0, 1.0)):
        rating_unrated = [unrated[[b"x", b"y", b"z"].index(title)] for title in titles]
        return tuned.implicit_als_loss(
            user_model,
            movie_model,
            catalogue,
            tf.constant(unrated),
            tf.constant(users),
            tf.constant(titles),
            tf.constant(shares),
            tf.constant(weights or [3.0] * len(users)),
            tf.constant(rating_unrated),
        ).numpy()

    # a scores x, y, z as 1, 0, 0; b as 0, 2, 0. a rated x and y, b rated y. With rated movies weighted 3:
    # a: 3 (1 - 1)^2 + 3 (1 - 0)^2 + 0^2 = 3;  b: 3 (1 - 2)^2 + 0^2 + 0^2 = 3.
    ratings = ([b"a", b"b", b"a"], [b"x", b"y", b"y"], [0.5, 1.0, 0.5])
    assert loss(*ratings) == pytest.approx(6.0)
    # Split over two batches, each rating carrying its share of its user's term, the sum is the same.
    first = loss([b"a"], [b"x"], [0.5])
    second = loss([b"b", b"a"], [b"y", b"y"], [1.0, 0.5])
    assert first + second == pytest.approx(6.0)
    # Each rating brings its own weight: a's y at 7 and b's y at 2 give 7 (1 - 0)^2 + 2 (1 - 2)^2; a's x,
    # scored exactly 1, adds nothing whatever its weight.
    assert loss(*ratings, weights=[5.0, 2.0, 7.0]) == pytest.approx(9.0)
    # Each weight belongs to its own rating: swapped, a's y weighs 5 and the loss is 5 + 2.
    assert loss(*ratings, weights=[7.0, 2.0, 5.0]) == pytest.approx(7.0)
    # An unrated movie's squared score counts its unrated weight times: if both rated only x, b's 2 on y
    # adds 2^2 = 4 to b's 3 (1 - 0)^2, or half of it with y's unrated weight at 0.5. a scores y 0.
    only_x = ([b"a", b"b"], [b"x", b"x"], [1.0, 1.0])
    assert loss(*only_x) == pytest.approx(7.0)
    assert loss(*only_x, unrated=(1.0, 0.5, 3.0)) == pytest.approx(5.0)
    # A rated pair's unrated weight is taken back out with its score: a's x at 1, with x's weight 2 too.
    assert loss(*ratings, unrated=(2.0, 0.5, 3.0)) == pytest.approx(6.0)


def test_each_rating_carries_its_share_of_its_user():
    data = tiny_movielens()
    features = als_features(data)(tf.range(data.num_ratings))
    shares = features["user_share"].numpy()
    users = features["user_id"].numpy()
    for user in set(users):
        assert shares[users == user].sum() == pytest.approx(1.0)
        assert len(set(shares[users == user])) == 1
    tutorial = recommend.rating_features(data)(tf.range(4))
    assert set(tutorial) == {"user_id", "movie_title"}


@pytest.mark.parametrize("loved, disliked", [(ALPHA, BETA), (BETA, ALPHA)])
def test_weighing_by_stars_leans_a_user_towards_the_films_they_rated_highly(loved, disliked):
    # Users 1-4 watch the Alpha films and 5-8 the Beta ones, 3 stars each. User 9 has rated three of each
    # group: the loved ones 5 stars and the others 1. Either way round, the films to recommend them are
    # the two loved ones they have not rated.
    ratings = [(str(user), title, 3.0) for user in range(1, 5) for title in ALPHA]
    ratings += [(str(user), title, 3.0) for user in range(5, 9) for title in BETA]
    ratings += [("9", title, 5.0) for title in loved[:3]] + [("9", title, 1.0) for title in disliked[:3]]
    users, movies, stars = zip(*ratings)
    data = from_ratings(
        np.array([user.encode() for user in users], dtype=object),
        np.array([title.encode() for title in movies], dtype=object),
        np.array([title.encode() for title in ALPHA + BETA], dtype=object),
        stars=np.array(stars, np.float32),
    )
    # Two numbers a vector, one a group: too few to fit every rating exactly, so the weights decide.
    recipe = dataclasses.replace(
        TINY_TUNED,
        embedding_dim=2,
        weight_by_stars=True,
        optimizer="adam",
        learning_rate=0.05,
        epochs=200,
        embedding_l2=0.1,
    )
    recommender = train_tiny(recipe, data=data)
    assert set(titles(top(recommender, "9", 2, include_rated=False))) == set(loved[3:])


def test_implicit_als_learns_the_planted_tastes():
    # 39 ratings pull far less than MovieLens's 80,000 against the same L2, so it is smaller here.
    recipe = dataclasses.replace(
        TINY_TUNED,
        optimizer="adam",
        learning_rate=0.05,
        epochs=200,
        embedding_l2=0.1,
    )
    recommender = train_tiny(recipe)
    assert titles(top(recommender, PLANTED_USER, 1, include_rated=False)) == [PLANTED_MOVIE]
    recommendations = titles(top(recommender, "5", 11, include_rated=True))
    assert set(recommendations[:5]) == set(BETA)
    # A new viewer who names two Beta films is fitted to the same loss and is offered the other Beta ones.
    served = serving.build_recommender(recommender.model, recommender.index, recommender.data, recipe)
    liked = movie_space.recommend_for_liked(served, list(BETA[:2]), 3, include_rated=False)
    assert set(titles(liked)) == set(BETA[2:])


def fixed_tower(vectors: dict[bytes, list[float]]):
    """A tower that maps each text to a fixed vector."""
    lookup = tf.keras.layers.StringLookup(vocabulary=list(vectors), num_oov_indices=0)
    table = tf.constant(list(vectors.values()), tf.float32)
    return lambda texts: tf.gather(table, lookup(texts))


def test_a_batch_of_rating_numbers_becomes_the_ratings_text():
    user_ids = np.array([b"1", b"2", b"3", b"1"], dtype=object)
    movie_titles = np.array([b"Heat", b"Heat", b"Heat", b"Fargo"], dtype=object)
    stars = np.array([4.0, 2.0, 3.0, 3.0])
    data = from_ratings(user_ids, movie_titles, np.array([b"Heat", b"Fargo", b"Ran"]), stars=stars)
    batch = recommend.rating_features(data)(tf.constant([3, 0, 1], tf.int64))
    assert set(batch) == {"user_id", "movie_title"}
    assert batch["user_id"].numpy().tolist() == [b"1", b"1", b"2"]
    assert batch["movie_title"].numpy().tolist() == [b"Fargo", b"Heat", b"Heat"]
    # With implicit ALS's loss each rating also carries its user's share: user 1 has two ratings.
    batch = als_features(data)(tf.constant([3, 0, 1], tf.int64))
    np.testing.assert_allclose(batch["user_share"], [0.5, 0.5, 1.0])
    # And its weight: average stars 3, so 1 + 5 x 3/3, 1 + 5 x 4/3 and 1 + 5 x 2/3.
    np.testing.assert_allclose(batch["rated_weight"], [6.0, 1 + 20 / 3, 1 + 10 / 3], rtol=1e-6)


def whole_objective(trained, recipe) -> float:
    """Implicit ALS's loss over every rating, plus each row's L2 counted once: what a pass should minimise."""
    model, data = trained.model, trained.data
    loss = model.training_loss(model.features(data)(tf.range(data.num_ratings, dtype=tf.int64)))
    tables = model.user_model.layers[-1].embeddings, model.movie_model.layers[-1].embeddings
    user_rows, movie_rows = alternating_least_squares.rating_rows(model, data)
    terms = tuned.row_terms(recipe, user_rows, movie_rows, *(table.shape[0] for table in tables))
    row_l2 = terms.user_l2, terms.movie_l2
    squares = [np.sum(np.square(table.numpy()), axis=1) for table in tables]
    return float(loss) + sum(float(l2 @ square) for l2, square in zip(row_l2, squares))


def test_the_l2_counts_once_a_pass_whatever_the_batch_size():
    # ALS's lambda belongs to a pass, not to a step: the 39 ratings in one batch a pass or in ten (of 4,
    # shuffled each pass) must reach the same minimum, and so rank the same titles first. Each row has its
    # own lambda, 0.08 (n + N): about 1.3 for a user (N = 12 movie rows) and 1 for a movie (N = 9).
    one_batch = dataclasses.replace(
        TINY_TUNED,
        optimizer="adam",
        learning_rate=0.05,
        epochs=300,
        embedding_l2=0.08,
        l2_frequency_power=1.0,
        unrated_popularity_power=0.5,
        weight_by_stars=False,
    )
    ten_batches = dataclasses.replace(one_batch, batch_size=4, shuffle_each_epoch=True, learning_rate=0.01)
    objectives, rankings = [], []
    for recipe in (one_batch, ten_batches):
        trained = train_tiny(recipe)
        objectives.append(whole_objective(trained, recipe))
        rankings.append([titles(top(trained, user, 5, include_rated=True)) for user in ("1", "5")])
    assert objectives[1] == pytest.approx(objectives[0], rel=0.02)
    assert [set(ranking) for ranking in rankings[1]] == [set(ranking) for ranking in rankings[0]]
