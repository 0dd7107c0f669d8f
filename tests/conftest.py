"""Shared test data: a tiny MovieLens with planted tastes, served through a mocked TFDS, and the real
MovieLens 100k when TFDS can load it (through TFDS_DATA_DIR)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import recommend  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

# Two groups of users with disjoint tastes: users 1-4 watch the Alpha movies, users 5-8 the Beta ones.
# User 1 has seen every Alpha movie but Alpha 5, so Alpha 5 is the one thing to recommend to them.
# "Twin (1999)" is the title of two movie ids, as 18 titles are in MovieLens.
ALPHA = [f"Alpha {n} (2001)" for n in range(1, 6)]
BETA = [f"Beta {n} (2002)" for n in range(1, 6)]
MOVIE_TITLES = ALPHA + BETA + ["Twin (1999)", "Twin (1999)"]
PLANTED_USER, PLANTED_MOVIE = "1", "Alpha 5 (2001)"


def tiny_ratings() -> list[tuple[str, str]]:
    ratings = []
    for user in range(1, 9):
        for title in ALPHA if user <= 4 else BETA:
            if (str(user), title) != (PLANTED_USER, PLANTED_MOVIE):
                ratings.append((str(user), title))
    ratings.append(("8", "Twin (1999)"))
    return ratings


def tiny_movielens() -> "recommend.MovieLens":
    users, titles = zip(*tiny_ratings())
    return recommend.MovieLens(
        user_ids=np.array([u.encode() for u in users], dtype=object),
        movie_titles=np.array([t.encode() for t in titles], dtype=object),
        movies_titles=np.array([t.encode() for t in MOVIE_TITLES], dtype=object),
    )


def write_metadata(data_dir) -> None:
    """Writes MovieLens' metadata (schema only, no ratings) so that TFDS counts it as prepared there."""
    for name in (recommend.RATINGS_DATASET, recommend.MOVIES_DATASET):
        builder = tfds.builder(name, data_dir=str(data_dir))
        os.makedirs(builder.data_dir, exist_ok=True)
        builder.info.write_to_directory(builder.data_dir)


@pytest.fixture
def tiny_tfds(tmp_path):
    """A TFDS data dir whose MovieLens is the tiny planted dataset, served by tfds.testing.mock_data."""
    data_dir = tmp_path / "tfds"
    write_metadata(data_dir)
    users, titles = zip(*tiny_ratings())

    def as_dataset(builder, *args, **kwargs):
        if builder.builder_config.name == "100k-ratings":
            return tf.data.Dataset.from_tensor_slices({"user_id": list(users), "movie_title": list(titles)})
        return tf.data.Dataset.from_tensor_slices({"movie_title": MOVIE_TITLES})

    with tfds.testing.mock_data(data_dir=str(data_dir), as_dataset_fn=as_dataset):
        yield str(data_dir)


def real_movielens_reason() -> str | None:
    """Why the real dataset cannot be used here, or None when TFDS has it."""
    for name in (recommend.RATINGS_DATASET, recommend.MOVIES_DATASET):
        if not tfds.builder(name).is_prepared():
            return f"{name} is not prepared in TFDS's data dir (set TFDS_DATA_DIR to a folder that holds it)"
    return None


@pytest.fixture(scope="session")
def real_movielens():
    """The real MovieLens 100k as arrays, read independently of recommend.py's loader."""
    reason = real_movielens_reason()
    if reason and os.environ.get("REQUIRE_MOVIELENS"):
        pytest.fail(f"REQUIRE_MOVIELENS is set, but {reason}")
    if reason:
        pytest.skip(reason)
    ratings = tfds.load(recommend.RATINGS_DATASET, split="train")
    ratings = ratings.map(lambda x: {"user_id": x["user_id"], "movie_title": x["movie_title"]})
    columns = ratings.batch(200_000).get_single_element()
    return {key: value.numpy() for key, value in columns.items()}
