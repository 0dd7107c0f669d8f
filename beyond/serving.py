"""Saving and serving: a SavedModel that answers without retraining (--save-dir, --load-dir).

The tutorial's index lives only as long as the program. This module wraps it in a tf.Module that any
TensorFlow program can load and call, with three signatures:

    1. serving_default (recommend): a user's top k, leaving out what they rated
    2. similar_movies: the k movies nearest a title (see beyond/movie_space.py)
    3. recommend_for_liked: the top k for a new viewer who names films they liked

It is saved all or nothing: staged in a new folder beside the target and renamed into place whole, so an
interrupted or failed save leaves the previous model (or nothing), never half of one.

    python recommend.py --user 42 --save-dir models/tutorial
    python recommend.py --user 7 --load-dir models/tutorial      # no data, no training
"""

import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import recommend
from beyond import big_data, movie_space, tuned
from beyond.guards import SaveFailed, UsageError, check_folder_can_be_made_in, failure_reason
from beyond.guards import make_folders, remove_empty_folders

SAVED_RECOMMENDER_FILE = "recommender.json"
SAVED_RECOMMENDER_FORMAT = "recommend.py saved recommender"
# What tf.saved_model.save writes, plus recommender.json: a folder with anything else is not ours.
SAVED_RECOMMENDER_CONTENTS = {
    SAVED_RECOMMENDER_FILE,
    "saved_model.pb",
    "fingerprint.pb",
    "variables",
    "assets",
}


class Recommender(tf.Module):
    """The core's BruteForce index, plus who rated what so it can leave rated movies out, and the movie
    embeddings with their titles for similar movies and new viewers.

    A saved BruteForce answers only the k it was traced with (tensorflow/recommenders#298), and its
    query_with_exclusions needs the number of exclusions when traced, so this one ranks the whole
    catalogue once and cuts it to any k afterwards.
    """

    def __init__(
        self,
        index: tfrs.layers.factorized_top_k.BruteForce,
        users: np.ndarray,
        rated_by_user: tuple[np.ndarray, np.ndarray],
        catalogue: np.ndarray,
        movie_embeddings: tf.Tensor,
        fold_in: movie_space.FoldIn,
    ):
        super().__init__()
        self.index = index
        self.catalogue_size = len(catalogue)
        # Who rated what: each user's row, then that row's rated catalogue rows (big_data.rated_by_user),
        # 4 bytes a rating. A user the data lacks gets the extra, empty row at the end.
        self.user_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(users, tf.range(len(users), dtype=tf.int64)),
            default_value=len(users),
        )
        offsets, rated_rows = rated_by_user
        self.rated_offsets = tf.Variable(
            np.append(offsets, offsets[-1]), trainable=False, name="rated_offsets"
        )
        self.rated_rows = tf.Variable(rated_rows, trainable=False, name="rated_rows")
        self.titles = tf.Variable(catalogue, trainable=False, name="titles")
        self.movie_embeddings = tf.Variable(movie_embeddings, trainable=False, name="movie_embeddings")
        self.title_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(catalogue, tf.range(len(catalogue), dtype=tf.int64)),
            default_value=-1,
        )
        # How a new viewer is fitted (movie_space.FoldIn), kept so that a loaded model fits them alike.
        for name, value in (
            ("fold_in_l2", fold_in.l2),
            ("fold_in_rated_weight", fold_in.rated_weight),
            ("fold_in_l2_frequency_power", fold_in.l2_frequency_power),
            ("fold_in_movie_table_rows", fold_in.movie_table_rows),
            ("fold_in_unrated_weight", fold_in.unrated_weight),
            ("fold_in_rated_titles_pull", fold_in.rated_titles_pull),
        ):
            setattr(self, name, tf.Variable(value, trainable=False, dtype=tf.float32, name=name))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_ids"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([], tf.bool, name="include_rated"),
        ]
    )
    def recommend(self, user_ids, k, include_rated):
        """Returns {"titles", "scores"}: each user's k best-scored movies, best first."""
        scores, titles = self.index(user_ids, k=self.catalogue_size)
        rated = tf.RaggedTensor.from_row_splits(self.rated_rows, self.rated_offsets, validate=False)
        rated = tf.gather(rated, self.user_rows.lookup(user_ids))
        rated_matrix = tf.scatter_nd(
            tf.stack([rated.value_rowids(), tf.cast(rated.flat_values, tf.int64)], axis=1),
            tf.ones_like(rated.flat_values),
            tf.stack([tf.size(user_ids, out_type=tf.int64), self.catalogue_size]),
        )
        was_rated = tf.gather(rated_matrix, self.title_rows.lookup(titles), batch_dims=1) > 0
        excluded = tf.logical_and(was_rated, tf.logical_not(include_rated))
        # Excluded titles sink to the bottom; top_k keeps the others in the index's order (on equal
        # scores it keeps the earlier one first), so k can be anything up to the movies left.
        _, kept = tf.math.top_k(tf.where(excluded, -np.inf, scores), k=k)
        return {
            "titles": tf.gather(titles, kept, batch_dims=1),
            "scores": tf.gather(scores, kept, batch_dims=1),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="titles"),
            tf.TensorSpec([], tf.int32, name="k"),
        ]
    )
    def similar_movies(self, titles, k):
        """Returns {"titles", "scores"}: for each title, the k others nearest to it (see nearest_movies)."""
        with tf.control_dependencies([self.at_most_the_catalogue(k)]):
            return movie_space.nearest_movies(self.movie_embeddings, self.titles, self.rows_of(titles), k)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="titles"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([], tf.bool, name="include_rated"),
        ]
    )
    def recommend_for_liked(self, titles, k, include_rated):
        """Returns {"titles", "scores"}: the k best movies for a new viewer who liked these titles."""
        tf.debugging.assert_positive(tf.size(titles), message="name at least one liked title")
        rows = self.rows_of(titles)
        embeddings, rated_weight = self.movie_embeddings, self.fold_in_rated_weight
        titles_named = tf.cast(tf.size(rows), tf.float32)
        l2 = tuned.row_l2(
            self.fold_in_l2, self.fold_in_l2_frequency_power, titles_named, self.fold_in_movie_table_rows
        )
        viewer = tf.cond(
            rated_weight > 0,
            lambda: movie_space.least_squares_viewer(
                embeddings,
                self.fold_in_unrated_weight,
                rows,
                l2,
                rated_weight,
                self.fold_in_rated_titles_pull,
            ),
            lambda: movie_space.fold_in_viewer(embeddings, rows, l2),
        )
        scores = tf.linalg.matvec(embeddings, viewer)
        liked = tf.scatter_nd(rows[:, tf.newaxis], tf.ones_like(rows, tf.bool), [self.catalogue_size])
        scores = tf.where(liked & tf.logical_not(include_rated), -np.inf, scores)
        with tf.control_dependencies([self.at_most_the_catalogue(k)]):
            scores, kept = tf.math.top_k(scores, k=k)
        return {"titles": tf.gather(self.titles, kept), "scores": scores}

    def at_most_the_catalogue(self, k):
        return tf.debugging.assert_less_equal(
            k, self.catalogue_size, message="k is more than the movies in the catalogue"
        )

    def rows_of(self, titles):
        rows = self.title_rows.lookup(titles)
        # A plain TensorFlow program calling the SavedModel gets this message, not a silent wrong answer.
        # The dependency makes the check run before any use of the rows, not alongside it.
        known = tf.debugging.assert_non_negative(
            rows, message="a title is not in the catalogue (titles are exact)"
        )
        with tf.control_dependencies([known]):
            return tf.identity(rows)


def build_recommender(model, index, data: recommend.MovieLens, recipe) -> Recommender:
    """A Recommender around the core's index (build_index) of a model RECIPE trained. A new viewer is
    fitted to the loss the model was trained on: implicit ALS's (least_squares_viewer) or the softmax."""
    return Recommender(
        index,
        data.users,
        big_data.rated_by_user(data),
        data.catalogue,
        model.movie_model(data.catalogue),
        recipe.fold_in(model, data),
    )


def recommend_from(recommender: Recommender, user_id: str, k: int, include_rated: bool) -> list[dict]:
    """One user's top k from a loaded Recommender: what the core's recommend() gives, served."""
    result = recommender.recommend(
        user_ids=tf.constant([user_id]), k=tf.constant(k, tf.int32), include_rated=tf.constant(include_rated)
    )
    return recommend.ranking(result["titles"][0].numpy(), result["scores"][0].numpy())


def is_saved_recommender(directory: str) -> bool:
    """True only for a folder this script saved: recommender.json, the SavedModel, and nothing else."""
    try:
        with open(os.path.join(directory, SAVED_RECOMMENDER_FILE)) as file:
            marked = json.load(file).get("format") == SAVED_RECOMMENDER_FORMAT
        return marked and set(os.listdir(directory)) <= SAVED_RECOMMENDER_CONTENTS
    except (OSError, ValueError, AttributeError):
        return False


def check_save_dir(directory: str) -> None:
    """Refuses, before any training, a target this script could not or should not write."""
    if not directory:
        raise UsageError("--save-dir needs a folder name")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--save-dir {directory} is a file, not a folder")
    if os.path.isdir(directory) and os.listdir(directory) and not is_saved_recommender(directory):
        raise UsageError(
            f"--save-dir {directory} holds files that are not a saved recommender; not touching it"
        )
    # The save is staged in a new folder beside the target, so try exactly that.
    check_folder_can_be_made_in(pathlib.Path(os.path.abspath(directory)).parent, "--save-dir", directory)


def save_recommender(recommender: Recommender, details: dict, directory: str) -> None:
    """Writes a SavedModel plus recommender.json, all or nothing (see the module's docstring)."""
    given, directory = directory, os.path.abspath(directory)
    existed = os.path.exists(directory)
    parent = os.path.dirname(directory)
    created = make_folders(pathlib.Path(parent))
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.saving-", dir=parent)
    set_aside = os.path.join(parent, f".{os.path.basename(directory)}.replaced-{os.path.basename(staging)}")
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private; a model folder needn't be
        tf.saved_model.save(
            recommender,
            staging,
            # The first is what every SavedModel server calls; the other two answer --similar-to and --liked.
            signatures={
                "serving_default": recommender.recommend.get_concrete_function(),
                "similar_movies": recommender.similar_movies.get_concrete_function(),
                "recommend_for_liked": recommender.recommend_for_liked.get_concrete_function(),
            },
        )
        with open(os.path.join(staging, SAVED_RECOMMENDER_FILE), "w") as file:
            json.dump({"format": SAVED_RECOMMENDER_FORMAT, **details}, file, indent=1)
        # Checked again: training took a while, and something else may have written there meanwhile.
        check_save_dir(directory)
        if os.path.exists(directory):
            os.rename(directory, set_aside)
        try:
            os.rename(staging, directory)
        except BaseException:
            if os.path.exists(set_aside):
                os.rename(set_aside, directory)
            raise
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty_folders(created)
        if isinstance(error, (OSError, tf.errors.OpError)):
            outcome = "the folder is as it was" if existed else "nothing was left behind"
            raise SaveFailed(
                f"could not save the recommender to {given}: {failure_reason(error)}; {outcome}"
            ) from None
        raise
    shutil.rmtree(set_aside, ignore_errors=True)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def load_recommender(directory: str):
    """Returns (the loaded SavedModel, its recommender.json), or a UsageError saying what is wrong."""
    if not directory:
        raise UsageError("--load-dir needs a folder name")
    if not os.path.isdir(directory):
        raise UsageError(f"--load-dir {directory} does not exist")
    if not os.listdir(directory):
        raise UsageError(f"--load-dir {directory} is empty: save a recommender there first with --save-dir")
    if not is_saved_recommender(directory):
        raise UsageError(f"--load-dir {directory} does not hold a recommender saved by this script")
    with open(os.path.join(directory, SAVED_RECOMMENDER_FILE)) as file:
        details = json.load(file)
    try:
        saved = tf.saved_model.load(directory)
    except Exception as error:  # A damaged or partial copy: say so rather than show TensorFlow's trace.
        raise UsageError(f"--load-dir {directory} could not be loaded: {failure_reason(error)}") from None
    return saved, details
