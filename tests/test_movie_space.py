"""What the movie tower answers on its own: --similar-to, and --liked for a viewer the model never saw."""

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf

from beyond import guards, movie_space, recipes, serving
from conftest import ALPHA, BETA
from test_alternating_least_squares import PULLED_ALS, SCALED_ALS
from test_cli import TINY_TRAINING, assert_one_line_error, run
from test_training import train_tiny

CATALOGUE = [
    "Alpha 1 (2001)",
    "Alpha 10 (2001)",
    "Beta (2002)",
    "Déjà Vu (1997)",
    "Star Wars (1977)",
    "Stargate (1994)",
]


@pytest.mark.parametrize(
    "text, title",
    [
        ("Alpha 1 (2001)", "Alpha 1 (2001)"),  # exact, though "Alpha 1" alone would name two titles
        ("STAR WARS", "Star Wars (1977)"),  # a part of exactly one title, in any case
        ("  beta ", "Beta (2002)"),  # surrounding spaces do not count
        ("(1994)", "Stargate (1994)"),
        ("deja vu", "Déjà Vu (1997)"),  # accents need not be typed
        ("DÉJÀ", "Déjà Vu (1997)"),
    ],
)
def test_a_title_is_matched_exactly_or_by_a_unique_part(text, title):
    assert movie_space.match_title(text, CATALOGUE) == title


def test_a_whole_title_in_another_case_wins_over_the_titles_it_is_part_of():
    titles = ["Fear (1996)", "Primal Fear (1996)"]
    assert movie_space.match_title("fear (1996)", titles) == "Fear (1996)"
    assert movie_space.match_title("primal", titles) == "Primal Fear (1996)"
    with pytest.raises(guards.UsageError, match="is part of 2 titles"):
        movie_space.match_title("fear", titles)


def test_a_part_of_several_titles_is_refused_with_them_listed():
    with pytest.raises(guards.UsageError) as refused:
        movie_space.match_title("alpha 1", CATALOGUE)
    assert str(refused.value) == (
        "'alpha 1' is part of 2 titles: 'Alpha 1 (2001)', 'Alpha 10 (2001)'; give more of the title"
    )


def test_at_most_five_of_many_matches_are_listed():
    many = [f"Gamma {n} (2003)" for n in range(1, 8)]
    with pytest.raises(guards.UsageError) as refused:
        movie_space.match_title("gamma", many)
    assert "is part of 7 titles" in str(refused.value)
    assert str(refused.value).count("Gamma") == 5 and ", ..." in str(refused.value)


def test_a_title_matching_nothing_gets_close_candidates():
    with pytest.raises(guards.UsageError) as refused:
        movie_space.match_title("star wors", CATALOGUE)
    message = str(refused.value)
    assert message.startswith("no movie title matches 'star wors'; close titles: 'Star Wars (1977)'")
    with pytest.raises(guards.UsageError) as refused:
        movie_space.match_title("zzzz", CATALOGUE)
    assert str(refused.value) == "no movie title matches 'zzzz'"


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_title_is_refused(text):
    with pytest.raises(guards.UsageError, match="empty title"):
        movie_space.match_title(text, CATALOGUE)


def test_nearest_movies_ranks_by_cosine_and_leaves_the_movie_out():
    # By dot product "long" (a popular movie's long vector) would be nearest to "east"; by direction,
    # "east-ish" is (cosine 0.995), then "long" (0.707), then "north" (0) and "west" (-1).
    embeddings = tf.constant([[1.0, 0.0], [10.0, 10.0], [1.0, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    titles = tf.constant(["east", "long", "east-ish", "north", "west"])
    result = movie_space.nearest_movies(embeddings, titles, tf.constant([0], tf.int64), tf.constant(4))
    assert [title.decode() for title in result["titles"][0].numpy()] == ["east-ish", "long", "north", "west"]
    np.testing.assert_allclose(result["scores"][0], [1 / math.sqrt(1.01), 1 / math.sqrt(2), 0, -1], atol=1e-6)


def test_fold_in_finds_the_vector_where_the_softmax_gradient_vanishes():
    # Four movies at +-x and +-y; the viewer liked +x. By symmetry the vector is (a, 0), and the loss
    # logsumexp(a, -a, 0, 0) - a + l2 a^2 is smallest where tanh(a / 2) + 2 l2 a = 1.
    embeddings = tf.constant([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    l2 = 0.25
    a, y = movie_space.fold_in_viewer(embeddings, tf.constant([0], tf.int64), tf.constant(l2)).numpy()
    assert abs(y) < 1e-6
    assert math.tanh(a / 2) + 2 * l2 * a == pytest.approx(1.0, abs=1e-5)
    # Liking +x twice is liking it with twice the weight against the same pull to zero: a longer vector.
    twice = movie_space.fold_in_viewer(embeddings, tf.constant([0, 0], tf.int64), tf.constant(l2)).numpy()
    assert math.tanh(twice[0] / 2) + l2 * twice[0] == pytest.approx(1.0, abs=1e-5)


def test_fold_in_converges_on_a_catalogue_of_realistic_size():
    # 1,664 random movies of 64 numbers, ten of them liked: after FOLD_IN_STEPS steps the gradient of
    # sum over liked of [logsumexp(E v) - e_m . v] + l2 |v|^2 is zero to float32 precision.
    embeddings = tf.constant(np.random.default_rng(0).normal(0, 0.4, (1664, 64)), tf.float32)
    liked = tf.constant(np.arange(0, 1000, 100), tf.int64)
    l2 = recipes.FOLD_IN_DEFAULT_L2
    viewer = movie_space.fold_in_viewer(embeddings, liked, tf.constant(l2))
    expected_movie = tf.linalg.matvec(
        embeddings, tf.nn.softmax(tf.linalg.matvec(embeddings, viewer)), transpose_a=True
    )
    gradient = 10 * expected_movie - tf.reduce_sum(tf.gather(embeddings, liked), axis=0) + 2 * l2 * viewer
    assert float(tf.norm(viewer)) > 1  # a real answer, not the zero it starts from
    assert float(tf.norm(gradient)) < 1e-4


def test_least_squares_fold_in_is_worked_out_by_hand():
    # Two movies along the axes; the viewer liked the first. With rated weight 2 and L2 1 the loss is
    # 2 (1 - a)^2 + b^2 + (a^2 + b^2), smallest at a = 2/3, b = 0.
    embeddings, liked = tf.constant([[1.0, 0.0], [0.0, 1.0]]), tf.constant([0], tf.int64)
    viewer = movie_space.least_squares_viewer(embeddings, tf.ones(2), liked, 1.0, 2.0, 0.0).numpy()
    np.testing.assert_allclose(viewer, [2 / 3, 0.0], atol=1e-6)
    # The second movie along (1, 1) with unrated weight 3 (the liked one's unrated weight, 5, must not
    # count): 2 (1 - a)^2 + 3 (a + b)^2 + a^2 + b^2. Its gradient is zero where 2 (a - 1) + 3 (a + b) + a = 0
    # and 3 (a + b) + b = 0: b = -3a / 4, then 15a / 4 = 2, so a = 8 / 15 and b = -2 / 5.
    embeddings = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    viewer = movie_space.least_squares_viewer(
        embeddings, tf.constant([5.0, 3.0]), liked, 1.0, 2.0, 0.0
    ).numpy()
    np.testing.assert_allclose(viewer, [8 / 15, -2 / 5], atol=1e-6)
    # Pulled towards half the mean of the films liked, both: the loss with the first layout becomes
    # 2 (1 - a)^2 + 2 (1 - b)^2 + (a - 1/4)^2 + (b - 1/4)^2, smallest where 2 (a - 1) + (a - 1/4) = 0:
    # a = b = 3/4. Without the pull, 2/3 each: the same direction, longer.
    embeddings, liked = tf.constant([[1.0, 0.0], [0.0, 1.0]]), tf.constant([0, 1], tf.int64)
    viewer = movie_space.least_squares_viewer(embeddings, tf.ones(2), liked, 1.0, 2.0, 0.5).numpy()
    np.testing.assert_allclose(viewer, [3 / 4, 3 / 4], atol=1e-6)


def test_least_squares_fold_in_is_where_the_loss_is_smallest():
    # On a random catalogue the gradient of implicit ALS's loss, written out movie by movie, is zero there.
    rng = np.random.default_rng(1)
    embeddings = tf.constant(rng.normal(0, 0.3, (300, 8)), tf.float32)
    unrated = tf.constant(rng.uniform(0.5, 2.0, 300), tf.float32)
    liked = tf.constant([3, 50, 200], tf.int64)
    viewer = tf.Variable(movie_space.least_squares_viewer(embeddings, unrated, liked, 5.0, 6.0, 0.0))
    is_liked = np.isin(np.arange(300), liked.numpy())
    with tf.GradientTape() as tape:
        scores = tf.linalg.matvec(embeddings, viewer)
        loss = tf.reduce_sum(
            tf.where(is_liked, 6.0 * tf.square(1.0 - scores), unrated * tf.square(scores))
        ) + 5.0 * tf.reduce_sum(tf.square(viewer))
    assert float(tf.norm(viewer)) > 0.1
    assert float(tf.norm(tape.gradient(loss, viewer))) < 1e-4


# With the pull the two tables keep turning together from pass to pass, a rotation that changes no
# score, while the trained users' vectors are a half-step behind the movies': 2e-4 apart on this data.
@pytest.mark.parametrize(
    "recipe, tolerance", [(SCALED_ALS, 1e-4), (PULLED_ALS, 5e-4)], ids=["scaled", "pulled"]
)
def test_a_new_viewer_naming_a_users_films_gets_the_vector_training_gave_that_user(recipe, tolerance):
    # Fitted by the rule training fitted every user by: the same L2 for as many ratings, pulling towards the
    # same mean of the films named, the same unrated weights. Without stars every rating weighs as a liked
    # film does, so a viewer who names exactly user 1's four films must score every movie as user 1 does,
    # once training has converged.
    recipe = dataclasses.replace(recipe, embedding_dim=3, epochs=60, weight_by_stars=False)
    trained = train_tiny(recipe)
    recommender = serving.build_recommender(trained.model, trained.index, trained.data, recipe)
    named = ALPHA[:4]  # all of user 1's ratings
    catalogue = len(trained.data.catalogue)
    fitted = recommender.recommend_for_liked(
        titles=tf.constant(named), k=tf.constant(catalogue), include_rated=tf.constant(True)
    )
    user = recommender.recommend(
        user_ids=tf.constant(["1"]), k=tf.constant(catalogue), include_rated=tf.constant(True)
    )
    as_fitted = dict(zip(fitted["titles"].numpy(), fitted["scores"].numpy()))
    as_trained = dict(zip(user["titles"][0].numpy(), user["scores"][0].numpy()))
    assert as_fitted.keys() == as_trained.keys()
    np.testing.assert_allclose(
        [as_fitted[title] for title in as_trained], list(as_trained.values()), atol=tolerance
    )
    assert max(as_trained.values()) > 0.5  # a real taste, not vectors near zero
    # The L2 of 0.05 x (4 titles + 12 movie rows) is what makes it so: the bare 0.05 gives another vector.
    unrated, rows = recommender.fold_in_unrated_weight, tf.constant([0, 1, 2, 3])
    bare = movie_space.least_squares_viewer(
        recommender.movie_embeddings, unrated, rows, 0.05, recipe.rated_weight, recipe.rated_titles_pull
    )
    bare_scores = tf.linalg.matvec(recommender.movie_embeddings, bare).numpy()
    assert np.abs(bare_scores.max() - max(as_trained.values())) > 0.01


def similar(capsys, tiny_tfds, *argv):
    status, out, err = run(capsys, *argv, "--json", "--data-dir", tiny_tfds, *TINY_TRAINING)
    assert status == 0, err
    return json.loads(out)


def test_similar_to_lists_the_rest_of_the_movies_group(tiny_tfds, capsys):
    document = similar(capsys, tiny_tfds, "--similar-to", "alpha 3", "--k", "4")
    assert document["title"] == "Alpha 3 (2001)"
    assert {item["title"] for item in document["similar"]} == set(ALPHA) - {"Alpha 3 (2001)"}
    scores = [item["score"] for item in document["similar"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= score <= 1 for score in scores)
    assert [item["rank"] for item in document["similar"]] == [1, 2, 3, 4]


def test_similar_to_prints_a_table_and_never_lists_the_movie_itself(tiny_tfds, capsys):
    status, out, _ = run(
        capsys, "--similar-to", "Beta 2 (2002)", "--k", "10", "--data-dir", tiny_tfds, *TINY_TRAINING
    )
    assert status == 0
    heading, columns, *rows = out.splitlines()
    assert heading == "The 10 movies most similar to Beta 2 (2002) (cosine of their embeddings):"
    assert columns.split() == ["rank", "title", "score"]
    listed = [re.fullmatch(r"\s*\d+  (.+?)\s+-?\d\.\d\d", row).group(1) for row in rows]
    assert len(listed) == 10 and "Beta 2 (2002)" not in listed
    assert set(listed[:4]) == set(BETA) - {"Beta 2 (2002)"}


def test_liking_two_films_of_a_group_surfaces_the_rest_of_it(tiny_tfds, capsys):
    document = similar(capsys, tiny_tfds, "--liked", "Alpha 1 (2001)", "--liked", "alpha 2", "--k", "3")
    assert document["liked"] == ["Alpha 1 (2001)", "Alpha 2 (2001)"]
    assert {item["title"] for item in document["recommendations"]} == set(ALPHA[2:])
    document = similar(capsys, tiny_tfds, "--liked", "beta 4", "--k", "4")
    assert {item["title"] for item in document["recommendations"]} == set(BETA) - {"Beta 4 (2002)"}


def test_include_rated_keeps_the_liked_films_in(tiny_tfds, capsys):
    document = similar(
        capsys, tiny_tfds, "--liked", "alpha 1", "--liked", "alpha 2", "--k", "5", "--include-rated"
    )
    assert {item["title"] for item in document["recommendations"]} == set(ALPHA)


def test_a_title_named_twice_counts_once_with_a_note(tiny_tfds, capsys):
    status, out, err = run(
        capsys, "--liked", "alpha 1", "--liked", "Alpha 1 (2001)", "--k", "3", "--json",
        "--data-dir", tiny_tfds, *TINY_TRAINING,
    )  # fmt: skip
    assert status == 0
    assert json.loads(out)["liked"] == ["Alpha 1 (2001)"]
    assert "note: 'Alpha 1 (2001)' was named more than once; it counts once" in err


def test_the_liked_table_names_the_films(tiny_tfds, capsys):
    status, out, _ = run(capsys, "--liked", "beta 1", "--k", "2", "--data-dir", tiny_tfds, *TINY_TRAINING)
    assert status == 0
    assert out.splitlines()[0] == "Top 2 movies for a viewer who liked Beta 1 (2002), leaving it out:"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--similar-to", "gamma"], "no movie title matches 'gamma'"),
        (["--similar-to", "alpha"], "'alpha' is part of 5 titles"),
        (["--liked", "alpha 1", "--liked", "beta"], "'beta' is part of 5 titles"),
        (["--liked", "deja vo"], "close titles: 'Déjà Vu (1997)'"),
        (["--similar-to", "alpha 1", "--k", "11"], "--k 11 is more than the 10 other movies"),
        (["--liked", "alpha 1", "--k", "11"], "--k 11 is more than the 10 movies left"),
        (["--liked", "alpha 1", "--user", "1"], "not allowed with argument"),
        (["--similar-to", "alpha 1", "--evaluate"], "not allowed with argument"),
        (["--similar-to", "alpha 1", "--repeat", "2"], "--repeat repeats an --evaluate run"),
    ],
)
def test_a_bad_question_is_refused_before_training(argv, fragment, tiny_tfds, capsys):
    status, out, err = run(capsys, *argv, "--data-dir", tiny_tfds, *TINY_TRAINING)
    assert_one_line_error(status, out, err, fragment)
