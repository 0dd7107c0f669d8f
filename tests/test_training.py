"""What training learns, on a tiny dataset with planted tastes (see conftest.py)."""

import collections
import dataclasses
import functools

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_recommenders as tfrs

import recommend
from beyond import evaluation, recipes
from conftest import (
    ALPHA,
    BETA,
    PLANTED_MOVIE,
    PLANTED_USER,
    SHARED_TITLE,
    USERS,
    from_ratings,
    tiny_movielens,
)

# Enough passes for 39 ratings to shape 8-number embeddings; one batch holds them all.
TINY_RECIPE = dataclasses.replace(recipes.TUTORIAL, embedding_dim=8, epochs=30, batch_size=64)


Trained = collections.namedtuple("Trained", "index data model")


def train_tiny(recipe=TINY_RECIPE, seed=0, data=None) -> Trained:
    data = tiny_movielens() if data is None else data
    tf.keras.utils.set_random_seed(seed)
    user_ids_vocabulary, movie_titles_vocabulary = recommend.build_vocabularies(data)
    model = recipe.build_model(user_ids_vocabulary, movie_titles_vocabulary, data.catalogue)
    recipe.train(model, data, seed)
    return Trained(recommend.build_index(model, data), data, model)


@functools.lru_cache(maxsize=None)
def trained_tiny() -> Trained:
    """The tiny recipe trained once, shared by the tests that only ask it questions."""
    return train_tiny()


def top(trained: Trained, user_id: str, k: int, include_rated: bool) -> list[dict]:
    return recommend.recommend(trained.index, trained.data, user_id, k, include_rated=include_rated)


def titles(recommendations):
    return [item["title"] for item in recommendations]


def test_the_planted_movie_comes_first_and_rated_movies_never_appear():
    recommender = trained_tiny()
    # User 1 has not rated Alpha 5, five Beta movies and Déjà Vu: 7 movies in all.
    recommendations = top(recommender, PLANTED_USER, 7, include_rated=False)
    assert titles(recommendations)[0] == PLANTED_MOVIE
    assert set(titles(recommendations)) == {PLANTED_MOVIE, *BETA, SHARED_TITLE}
    scores = [item["score"] for item in recommendations]
    assert scores == sorted(scores, reverse=True)
    assert [item["rank"] for item in recommendations] == list(range(1, 8))


def fits_autotuning(monkeypatch) -> list:
    """Records, for each fit() from now on, whether its dataset has tf.data's autotuning on."""
    seen, fit = [], tf.keras.Model.fit

    def recording_fit(self, dataset, *args, **kwargs):
        seen.append(dataset.options().autotune.enabled)
        return fit(self, dataset, *args, **kwargs)

    monkeypatch.setattr(tf.keras.Model, "fit", recording_fit)
    return seen


def test_training_runs_without_tf_datas_autotuning_whose_thread_held_each_epochs_end(monkeypatch):
    seen = fits_autotuning(monkeypatch)
    train_tiny(dataclasses.replace(TINY_RECIPE, epochs=1))
    assert seen == [False]


def test_a_beta_user_is_recommended_beta_movies_before_alpha_ones():
    recommender = trained_tiny()
    recommendations = titles(top(recommender, "5", 11, include_rated=True))
    assert set(recommendations[:5]) == set(BETA)
    assert set(recommendations[-5:]) <= set(ALPHA) | {SHARED_TITLE}


def test_include_rated_ranks_the_whole_catalogue_once_per_title():
    recommender = trained_tiny()
    recommendations = titles(top(recommender, PLANTED_USER, 11, include_rated=True))
    # 12 movie ids, 11 distinct titles: the shared title appears once.
    assert sorted(recommendations) == sorted(set(ALPHA + BETA + [SHARED_TITLE]))


def test_the_same_seed_learns_the_same_scores():
    first = top(train_tiny(seed=3), "2", 5, include_rated=True)
    second = top(train_tiny(seed=3), "2", 5, include_rated=True)
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


def test_a_subset_keeps_each_ratings_own_stars():
    users = np.array([b"1", b"2", b"3", b"4"], dtype=object)
    movies = np.array([b"Heat", b"Fargo", b"Heat", b"Ran"], dtype=object)
    data = from_ratings(users, movies, movies, stars=np.array([1.0, 2.0, 3.0, 4.5]))
    part = evaluation.subset(data, np.array([3, 0]))
    assert part.user_ids.tolist() == [b"4", b"1"]
    assert part.rating_stars.tolist() == [4.5, 1.0]


def test_the_distinct_movie_softmax_is_retrievals_own_loss_with_the_same_gradients():
    # A batch of 300 ratings by 12 users of 20 movies, popularity skewed so most movies repeat many times.
    rng = np.random.default_rng(7)
    users = np.array([str(n).encode() for n in range(12)], dtype=object)
    movies = np.array([f"Movie {n}".encode() for n in range(20)], dtype=object)
    user_ids = users[rng.integers(0, 12, 300)]
    movie_titles = movies[np.minimum(rng.zipf(1.6, 300) - 1, 19)]
    data = from_ratings(user_ids, movie_titles, movies)
    tf.keras.utils.set_random_seed(1)
    model = recommend.build_model(*recommend.build_vocabularies(data), data.catalogue, embedding_dim=8)
    assert len(set(movie_titles)) < len(movie_titles) / 10  # many duplicates: the case that matters
    variables = model.user_model.trainable_variables + model.movie_model.trainable_variables

    with tf.GradientTape(persistent=True) as tape:
        # TFRS's own in-batch softmax: every user against every rating's movie, labels on the diagonal.
        tutorial = tfrs.tasks.Retrieval()(
            model.user_model(user_ids),
            model.movie_model(movie_titles),
            compute_metrics=False,
        )
        distinct = recommend.in_batch_softmax_loss(
            model.user_model, model.movie_model, tf.constant(user_ids), tf.constant(movie_titles)
        )
    np.testing.assert_allclose(distinct.numpy(), tutorial.numpy(), rtol=1e-5)
    for expected, got in zip(tape.gradient(tutorial, variables), tape.gradient(distinct, variables)):
        np.testing.assert_allclose(
            tf.convert_to_tensor(got), tf.convert_to_tensor(expected), rtol=1e-4, atol=1e-5
        )


class QuickstartModel(tfrs.Model):
    """The TFRS quickstart's model, as the quickstart writes it."""

    def __init__(self, user_model, movie_model, task):
        super().__init__()
        self.user_model = user_model
        self.movie_model = movie_model
        self.task = task

    def compute_loss(self, features, training=False):
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        return self.task(user_embeddings, movie_embeddings)


def test_the_quickstarts_own_code_learns_what_the_core_learns(tiny_tfds):
    """Every statement of the quickstart, run as it is written, beside the core's six steps: the same
    vectors after training (within float rounding) and the same top k (docs/from-the-tutorial.md)."""
    recipe = dataclasses.replace(recipes.TUTORIAL, embedding_dim=8, batch_size=16, epochs=10)
    # The quickstart, with the tiny data's folder and the recipe's sizes.
    ratings = tfds.load("movielens/100k-ratings", split="train", data_dir=tiny_tfds)
    movies = tfds.load("movielens/100k-movies", split="train", data_dir=tiny_tfds)
    ratings = ratings.map(lambda x: {"movie_title": x["movie_title"], "user_id": x["user_id"]})
    movies = movies.map(lambda x: x["movie_title"])
    user_ids_vocabulary = tf.keras.layers.StringLookup(mask_token=None)
    user_ids_vocabulary.adapt(ratings.map(lambda x: x["user_id"]))
    movie_titles_vocabulary = tf.keras.layers.StringLookup(mask_token=None)
    movie_titles_vocabulary.adapt(movies)
    user_model = tf.keras.Sequential(
        [user_ids_vocabulary, tf.keras.layers.Embedding(user_ids_vocabulary.vocabulary_size(), 8)]
    )
    movie_model = tf.keras.Sequential(
        [movie_titles_vocabulary, tf.keras.layers.Embedding(movie_titles_vocabulary.vocabulary_size(), 8)]
    )
    task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(movies.batch(128).map(movie_model)))
    quickstart = QuickstartModel(user_model, movie_model, task)
    quickstart.compile(optimizer=tf.keras.optimizers.Adagrad(0.5))

    # The core's steps, starting from the quickstart's own initial vectors.
    data = recommend.load_movielens(tiny_tfds)
    core = recipe.build_model(*recommend.build_vocabularies(data), data.catalogue)
    assert core.user_model.layers[0].get_vocabulary() == user_ids_vocabulary.get_vocabulary()
    assert core.movie_model.layers[0].get_vocabulary() == movie_titles_vocabulary.get_vocabulary()
    user_model(tf.constant(["1"])), movie_model(tf.constant(["x"]))  # the quickstart's towers build lazily
    core.user_model.layers[-1].set_weights(user_model.layers[-1].get_weights())
    core.movie_model.layers[-1].set_weights(movie_model.layers[-1].get_weights())

    quickstart.fit(ratings.batch(16), epochs=10, verbose=0)
    recipe.train(core, data, seed=0)
    for theirs, ours in [(user_model, core.user_model), (movie_model, core.movie_model)]:
        np.testing.assert_allclose(
            ours.layers[-1].get_weights()[0], theirs.layers[-1].get_weights()[0], atol=1e-4
        )

    index = tfrs.layers.factorized_top_k.BruteForce(quickstart.user_model)
    index.index_from_dataset(movies.batch(100).map(lambda title: (title, quickstart.movie_model(title))))
    ours = recommend.build_index(core, data)
    for user in USERS:
        scores, titles = (tensor[0].numpy() for tensor in index(np.array([user]), k=12))
        # The quickstart's index lists a title of two movie ids twice; the catalogue, once.
        first = [number for number, title in enumerate(titles) if title not in titles[:number]]
        our_scores, our_titles = (tensor[0].numpy() for tensor in ours(np.array([user]), k=11))
        assert our_titles.tolist() == titles[first].tolist()
        np.testing.assert_allclose(our_scores, scores[first], atol=1e-4)
