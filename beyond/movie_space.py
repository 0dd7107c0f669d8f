"""Similar movies and new viewers: two more questions the trained movie tower answers on its own.

The tutorial asks one question of the towers: which movies for this user? The movie tower alone answers
two more. Which movies are like this one (--similar-to)? And which movies for someone the model has never
seen, who names a few films they liked (--liked)? This module adds:

    1. match_title: what people type ("star wars", "miserables") to the one catalogue title it names
    2. nearest_movies: the movies whose vectors point most nearly the same way (cosine)
    3. fold_in_viewer / least_squares_viewer: a vector for a new viewer, fitted to the training loss by
       the rule training fitted every user by (FoldIn)
    4. similar_movies / recommend_for_liked: both asked of a Recommender, trained or loaded

    python recommend.py --similar-to "toy story"
    python recommend.py --liked "star wars" --liked "fargo" --tuned
"""

import dataclasses
import difflib
import re
import unicodedata

import numpy as np
import tensorflow as tf

import recommend
from beyond.guards import UsageError

# Newton's method converges in a handful of steps; twenty leave the vector unchanged to four decimals.
FOLD_IN_STEPS = 20


def match_title(text: str, titles: list[str]) -> str:
    """The one catalogue title TEXT names: the exact title, or a part of exactly one, compared without
    regard to case or accents ("miserables" names "Misérables, Les (1995)")."""
    if text in titles:
        return text
    wanted = folded(text.strip())
    if not wanted:
        raise UsageError("an empty title names no movie")
    # "fear (1996)" is all of one title and part of another ("Primal Fear (1996)"): the whole one wins.
    whole = [title for title in titles if folded(title) == wanted]
    if len(whole) == 1:
        return whole[0]
    found = [title for title in titles if wanted in folded(title)]
    if len(found) == 1:
        return found[0]
    if found:
        shown = ", ".join(repr(title) for title in found[:5]) + (", ..." if len(found) > 5 else "")
        raise UsageError(f"{text!r} is part of {len(found)} titles: {shown}; give more of the title")
    # No title contains it: suggest the titles that look most like it, compared without their years.
    without_year = {folded(re.sub(r"\s*\(\d{4}\)$", "", title)): title for title in reversed(titles)}
    close = difflib.get_close_matches(wanted, without_year, n=5, cutoff=0.6)
    hint = "; close titles: " + ", ".join(repr(without_year[key]) for key in close) if close else ""
    raise UsageError(f"no movie title matches {text!r}{hint}")


def folded(text: str) -> str:
    """TEXT in lower case without accents, for matching what people type against titles."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(character for character in decomposed if not unicodedata.combining(character)).casefold()


def nearest_movies(movie_embeddings: tf.Tensor, titles: tf.Tensor, rows: tf.Tensor, k: tf.Tensor) -> dict:
    """For each movie row, the k other movies whose embeddings point most nearly the same way.

    Closeness is the cosine of the angle between two movie vectors, not their dot product. The length of a
    movie's vector mostly says how often it is watched: the softmax gives popular movies long vectors so
    that they score high for everyone. By dot product the nearest movies to almost anything would be the
    same few hits; the direction says who watches a movie, which is what "similar" means here.
    """
    directions = tf.math.l2_normalize(movie_embeddings, axis=1)
    cosines = tf.matmul(tf.gather(directions, rows), directions, transpose_b=True)
    itself = tf.one_hot(rows, tf.shape(movie_embeddings)[0], on_value=True, off_value=False)
    scores, kept = tf.math.top_k(tf.where(itself, -np.inf, cosines), k=k)
    return {"titles": tf.gather(titles, kept), "scores": scores}


def fold_in_viewer(movie_embeddings: tf.Tensor, liked_rows: tf.Tensor, l2: tf.Tensor) -> tf.Tensor:
    """A user vector for someone who liked the movies at liked_rows, with the movie tower held fixed.

    It is the vector that training would have given this viewer: the one under which their liked movies
    win the model's own softmax over the whole catalogue, with a pull towards zero,
        minimise  sum over liked m of [logsumexp over all movies j of (v . e_j) - v . e_m]  +  l2 |v|^2.
    Averaging the liked movies' vectors is the obvious shortcut, but it keeps whatever those movies share
    with everything else (above all, being popular) and so drifts towards the hits. The softmax's gradient
    is (expected movie under the current scores) - (liked movies): the fitted vector is pushed exactly
    towards what sets the liked movies apart from the rest of the catalogue.

    The problem is small and smooth (one vector of embedding_dim numbers), so each step solves with the
    full Hessian; the damping, 1 / (1 + Newton decrement), keeps the first steps from overshooting.
    """
    liked = tf.gather(movie_embeddings, liked_rows)
    count = tf.cast(tf.size(liked_rows), tf.float32)
    dimension = tf.shape(movie_embeddings)[1]
    viewer = tf.zeros([dimension])
    for _ in tf.range(FOLD_IN_STEPS):
        probabilities = tf.nn.softmax(tf.linalg.matvec(movie_embeddings, viewer))
        expected = tf.linalg.matvec(movie_embeddings, probabilities, transpose_a=True)
        gradient = count * expected - tf.reduce_sum(liked, axis=0) + 2.0 * l2 * viewer
        covariance = tf.matmul(
            movie_embeddings * probabilities[:, tf.newaxis], movie_embeddings, transpose_a=True
        )
        covariance -= expected[:, tf.newaxis] * expected[tf.newaxis, :]
        hessian = count * covariance + 2.0 * l2 * tf.eye(dimension)
        step = tf.linalg.solve(hessian, gradient[:, tf.newaxis])[:, 0]
        decrement = tf.sqrt(tf.maximum(tf.tensordot(gradient, step, axes=1), 0.0))
        viewer -= step / (1.0 + decrement)
    return viewer


@dataclasses.dataclass(frozen=True)
class FoldIn:
    """How a new viewer is fitted, by the rule the recipe trained its users by (recipes.*.fold_in):

    l2, l2_frequency_power,    the viewer's L2, tuned.row_l2: l2 (titles named + movie_table_rows) to the
    movie_table_rows           power l2_frequency_power
    rated_weight               above 0, the loss is implicit ALS's, a liked film weighing this; 0, the
                               softmax's (fold_in_viewer)
    unrated_weight             each catalogue title's weight in implicit ALS's loss when not liked
    rated_titles_pull          the L2 holds the viewer near this times the mean of their liked films'
                               vectors (implicit ALS's loss only)
    """

    l2: float
    rated_weight: float
    l2_frequency_power: float
    movie_table_rows: int
    unrated_weight: np.ndarray
    rated_titles_pull: float


def least_squares_viewer(
    movie_embeddings: tf.Tensor,
    unrated_weight: tf.Tensor,
    liked_rows: tf.Tensor,
    l2: tf.Tensor,
    rated_weight: tf.Tensor,
    pull: tf.Tensor,
) -> tf.Tensor:
    """A new viewer's vector under implicit ALS's loss (see beyond/tuned.py), the movie tower held fixed:
        minimise  sum over liked m of rated_weight (1 - v . e_m)^2 + sum over the rest of c_j (v . e_j)^2
                  + l2 |v - PULL e-bar|^2,
    c being each movie's UNRATED_WEIGHT and e-bar the mean of the liked movies' vectors. It is a
    least-squares problem, solved exactly as ALS solves each user: with G the sum of c e e^T over the
    catalogue,
        v = (G + sum over liked m of (rated_weight - c_m) e_m e_m^T + l2 I)^-1
            (rated_weight sum of liked e_m + l2 PULL e-bar).
    """
    liked = tf.gather(movie_embeddings, liked_rows)
    extra = rated_weight - tf.gather(unrated_weight, liked_rows)
    dimension = tf.shape(movie_embeddings)[1]
    system = (
        tf.matmul(movie_embeddings * unrated_weight[:, tf.newaxis], movie_embeddings, transpose_a=True)
        + tf.matmul(liked * extra[:, tf.newaxis], liked, transpose_a=True)
        + l2 * tf.eye(dimension)
    )
    target = rated_weight * tf.reduce_sum(liked, axis=0) + l2 * pull * tf.reduce_mean(liked, axis=0)
    return tf.linalg.solve(system, target[:, tf.newaxis])[:, 0]


def catalogue_titles(recommender) -> list[str]:
    """The titles a Recommender (trained or loaded) can answer about, as text."""
    return [title.decode("utf-8") for title in recommender.titles.numpy()]


def similar_movies(recommender, title: str, k: int) -> list[dict]:
    result = recommender.similar_movies(titles=tf.constant([title]), k=tf.constant(k, tf.int32))
    return recommend.ranking(result["titles"][0].numpy(), result["scores"][0].numpy())


def recommend_for_liked(recommender, titles: list[str], k: int, include_rated: bool) -> list[dict]:
    result = recommender.recommend_for_liked(
        titles=tf.constant(titles), k=tf.constant(k, tf.int32), include_rated=tf.constant(include_rated)
    )
    return recommend.ranking(result["titles"].numpy(), result["scores"].numpy())
