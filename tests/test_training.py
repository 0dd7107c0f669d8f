"""What training learns, on a tiny dataset with planted tastes (see conftest.py)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import recommend
from conftest import ALPHA, BETA, PLANTED_MOVIE, PLANTED_USER, SHARED_TITLE, tiny_movielens

# Enough passes for 39 ratings to shape 8-number embeddings; one batch holds them all.
TINY_RECIPE = dataclasses.replace(recommend.TUTORIAL, embedding_dim=8, epochs=30, batch_size=64)


def train_tiny(recipe=TINY_RECIPE, seed=0):
    data = tiny_movielens()
    tf.keras.utils.set_random_seed(seed)
    user_ids_vocabulary, movie_titles_vocabulary = recommend.build_vocabularies(data)
    model = recommend.build_model(user_ids_vocabulary, movie_titles_vocabulary, data.catalogue, recipe)
    recommend.train(model, data, recipe, seed)
    return recommend.build_index(model, data)


def titles(recommendations):
    return [item["title"] for item in recommendations]


def test_the_planted_movie_comes_first_and_rated_movies_never_appear():
    recommender = train_tiny()
    # User 1 has not rated Alpha 5, five Beta movies and Déjà Vu: 7 movies in all.
    recommendations = recommend.recommend(recommender, PLANTED_USER, 7, include_rated=False)
    assert titles(recommendations)[0] == PLANTED_MOVIE
    assert set(titles(recommendations)) == {PLANTED_MOVIE, *BETA, SHARED_TITLE}
    scores = [item["score"] for item in recommendations]
    assert scores == sorted(scores, reverse=True)
    assert [item["rank"] for item in recommendations] == list(range(1, 8))


def test_a_beta_user_is_recommended_beta_movies_before_alpha_ones():
    recommender = train_tiny()
    recommendations = titles(recommend.recommend(recommender, "5", 11, include_rated=True))
    assert set(recommendations[:5]) == set(BETA)
    assert set(recommendations[-5:]) <= set(ALPHA) | {SHARED_TITLE}


def test_include_rated_ranks_the_whole_catalogue_once_per_title():
    recommender = train_tiny()
    recommendations = titles(recommend.recommend(recommender, PLANTED_USER, 11, include_rated=True))
    # 12 movie ids, 11 distinct titles: the shared title appears once.
    assert sorted(recommendations) == sorted(set(ALPHA + BETA + [SHARED_TITLE]))


def test_the_same_seed_learns_the_same_scores():
    first = recommend.recommend(train_tiny(seed=3), "2", 5, include_rated=True)
    second = recommend.recommend(train_tiny(seed=3), "2", 5, include_rated=True)
    assert first == second


def test_vocabularies_match_what_adapt_would_build():
    data = tiny_movielens()
    user_ids_vocabulary, movie_titles_vocabulary = recommend.build_vocabularies(data)
    adapted = tf.keras.layers.StringLookup(mask_token=None)
    adapted.adapt(data.movies)
    assert movie_titles_vocabulary.get_vocabulary() == adapted.get_vocabulary()
    # User 8 rated six movies, user 1 four, the rest five each: ties that adapt() breaks by the id.
    adapted_users = tf.keras.layers.StringLookup(mask_token=None)
    adapted_users.adapt(data.user_ids)
    assert user_ids_vocabulary.get_vocabulary() == adapted_users.get_vocabulary()
    # Row 0 is kept for ids the vocabulary has never seen.
    assert user_ids_vocabulary.get_vocabulary()[0] == "[UNK]"
    assert user_ids_vocabulary.vocabulary_size() == 8 + 1


def test_a_batch_of_rating_numbers_becomes_the_ratings_text_and_sampling_probabilities():
    user_ids = np.array([b"1", b"2", b"3", b"1"], dtype=object)
    movie_titles = np.array([b"Heat", b"Heat", b"Heat", b"Fargo"], dtype=object)
    data = recommend.MovieLens.from_ratings(user_ids, movie_titles, np.array([b"Heat", b"Fargo", b"Ran"]))
    recipe = dataclasses.replace(recommend.TUTORIAL, sampling_correction=True)
    batch = recommend.training_features(data, recipe)(tf.constant([3, 0, 1], tf.int64))
    assert batch["user_id"].numpy().tolist() == [b"1", b"1", b"2"]
    assert batch["movie_title"].numpy().tolist() == [b"Fargo", b"Heat", b"Heat"]
    # Heat is 3 of the 4 ratings, Fargo 1 of 4.
    np.testing.assert_allclose(batch["sampling_probability"], [0.25, 0.75, 0.75])
    assert "sampling_probability" not in recommend.training_features(data, recommend.TUTORIAL)(tf.range(4))


@pytest.mark.parametrize("with_sampling_correction", [False, True])
def test_the_distinct_movie_softmax_is_retrievals_own_loss_with_the_same_gradients(with_sampling_correction):
    # A batch of 300 ratings by 12 users of 20 movies, popularity skewed so most movies repeat many times.
    rng = np.random.default_rng(7)
    users = np.array([str(n).encode() for n in range(12)], dtype=object)
    movies = np.array([f"Movie {n}".encode() for n in range(20)], dtype=object)
    user_ids = users[rng.integers(0, 12, 300)]
    movie_titles = movies[np.minimum(rng.zipf(1.6, 300) - 1, 19)]
    data = recommend.MovieLens.from_ratings(user_ids, movie_titles, movies)
    recipe = dataclasses.replace(
        recommend.TUTORIAL, embedding_dim=8, sampling_correction=with_sampling_correction
    )
    tf.keras.utils.set_random_seed(1)
    model = recommend.build_model(*recommend.build_vocabularies(data), data.catalogue, recipe)
    features = recommend.training_features(data, recipe)(tf.range(300))
    probability = features.get("sampling_probability")
    assert len(set(movie_titles)) < len(movie_titles) / 10  # many duplicates: the case that matters
    variables = model.user_model.trainable_variables + model.movie_model.trainable_variables

    with tf.GradientTape(persistent=True) as tape:
        # TFRS's own in-batch softmax: every user against every rating's movie, labels on the diagonal.
        tutorial = tfrs.tasks.Retrieval()(
            model.user_model(user_ids),
            model.movie_model(movie_titles),
            candidate_sampling_probability=probability,
            compute_metrics=False,
        )
        distinct = recommend.in_batch_softmax_loss(
            model.user_model, model.movie_model, tf.constant(user_ids), tf.constant(movie_titles), probability
        )
    np.testing.assert_allclose(distinct.numpy(), tutorial.numpy(), rtol=1e-5)
    for expected, got in zip(tape.gradient(tutorial, variables), tape.gradient(distinct, variables)):
        np.testing.assert_allclose(
            tf.convert_to_tensor(got), tf.convert_to_tensor(expected), rtol=1e-4, atol=1e-5
        )


def test_the_full_catalogue_softmax_is_worked_out_by_hand():
    # Two users and three movies with fixed vectors; z is a movie nobody in the batch rated.
    def tower(vectors: dict[bytes, list[float]]):
        lookup = tf.keras.layers.StringLookup(vocabulary=list(vectors), num_oov_indices=0)
        table = tf.constant(list(vectors.values()), tf.float32)
        return lambda texts: tf.gather(table, lookup(texts))

    user_model = tower({b"a": [1.0, 0.0], b"b": [0.0, 1.0]})
    movie_model = tower({b"x": [1.0, 0.0], b"y": [0.0, 2.0], b"z": [0.0, 0.0]})
    loss = recommend.full_catalogue_softmax_loss(
        user_model,
        movie_model,
        tf.constant([b"x", b"y", b"z"]),
        tf.constant([b"a", b"b", b"a"]),
        tf.constant([b"x", b"y", b"y"]),
    )
    # a scores x, y, z as 1, 0, 0; b as 0, 2, 0. Ratings (a, x), (b, y), (a, y):
    # (log(e + 2) - 1) + (log(e^2 + 2) - 2) + (log(e + 2) - 0).
    e = np.e
    assert loss.numpy() == pytest.approx(2 * np.log(e + 2) + np.log(e**2 + 2) - 3, rel=1e-6)


def test_the_full_catalogue_softmax_learns_the_planted_tastes():
    recipe = dataclasses.replace(TINY_RECIPE, full_catalogue_softmax=True, learning_rate=0.2)
    recommender = train_tiny(recipe)
    assert titles(recommend.recommend(recommender, PLANTED_USER, 1, include_rated=False)) == [PLANTED_MOVIE]
    recommendations = titles(recommend.recommend(recommender, "5", 11, include_rated=True))
    assert set(recommendations[:5]) == set(BETA)


def test_the_tuned_recipe_corrects_for_sampling_only_when_it_keeps_in_batch_negatives(monkeypatch):
    data = tiny_movielens()  # 11 titles
    assert "sampling_probability" not in recommend.training_features(data, recommend.TUNED)(tf.range(4))
    monkeypatch.setattr(recommend, "FULL_SOFTMAX_MAX_TITLES", 10)
    assert "sampling_probability" in recommend.training_features(data, recommend.TUNED)(tf.range(4))
    model = recommend.build_model(*recommend.build_vocabularies(data), data.catalogue, recommend.TUNED)
    assert model.negatives is None
