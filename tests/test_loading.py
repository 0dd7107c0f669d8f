"""Loading MovieLens through TFDS, offline: what the loader reads, and clear failures without data."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import recommend
from beyond import download, guards, recipes, tuned
from conftest import MOVIE_TITLES, MOVIES_DATASET, RATINGS_DATASET, from_ratings, tiny_ratings, tiny_stars


def tfds_load_columns(name, data_dir):
    """The tutorial's way: tfds.load, one example at a time."""
    columns = {}
    for example in tfds.as_numpy(tfds.load(name, split="train", data_dir=data_dir)):
        for feature in ("user_id", "movie_title", "user_rating"):
            if feature in example:
                columns.setdefault(feature, []).append(example[feature])
    return columns


def test_load_reads_exactly_what_tfds_load_gives(tiny_tfds):
    data = recommend.load_movielens(tiny_tfds)
    ratings = tfds_load_columns(RATINGS_DATASET, tiny_tfds)
    movies = tfds_load_columns(MOVIES_DATASET, tiny_tfds)
    # Same examples in the same order: the order decides the tutorial's split and its batches.
    assert list(data.user_ids) == ratings["user_id"]
    assert list(data.movie_titles) == ratings["movie_title"]
    assert data.rating_stars.tolist() == ratings["user_rating"]
    assert list(data.movies) == movies["movie_title"]


def test_load_finds_the_tiny_datasets_ratings_and_titles(tiny_tfds):
    data = recommend.load_movielens(tiny_tfds)
    ratings = sorted(
        zip(
            (user.decode() for user in data.user_ids),
            (title.decode() for title in data.movie_titles),
            data.rating_stars.tolist(),
        )
    )
    assert ratings == sorted(
        (user, title, stars) for (user, title), stars in zip(tiny_ratings(), tiny_stars())
    )
    # The catalogue lists each title once (Déjà Vu is two movie ids), sorted, decoded from UTF-8.
    assert [title.decode() for title in data.catalogue] == sorted(set(MOVIE_TITLES))


def test_a_dataset_prepared_in_another_format_is_read_through_tfds(tmp_path):
    # Only MovieLens' metadata (no ratings), saying the examples are stored as ArrayRecord; TFDS's own
    # mock then serves random examples wherever the loader asks TFDS to read them.
    for name in (RATINGS_DATASET, MOVIES_DATASET):
        builder = tfds.builder(name, data_dir=str(tmp_path))
        os.makedirs(builder.data_dir)
        builder.info.set_file_format("array_record", override=True)
        builder.info.write_to_directory(builder.data_dir)
    with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
        chunks = list(recommend.read_features(RATINGS_DATASET, recommend.RATING_FEATURES, str(tmp_path)))
        titles = np.concatenate([chunk["movie_title"].numpy() for chunk in chunks])
        assert len(titles) == 6 and all(isinstance(title, bytes) for title in titles)
        stars = np.concatenate([chunk["user_rating"].numpy() for chunk in chunks])
        assert stars.dtype == np.float32 and len(stars) == 6
        # The mock's random ratings name titles its random movies lack: the loader says which is damaged.
        with pytest.raises(guards.DataUnavailableError, match="movielens/100k-ratings cannot be read"):
            download.load_movielens(str(tmp_path), None, "100k")


def test_ratings_are_read_a_chunk_at_a_time_in_the_order_tfds_gives(tiny_tfds, monkeypatch):
    whole = recommend.load_movielens(tiny_tfds)
    monkeypatch.setattr(recommend, "READ_CHUNK_SIZE", 7)  # 40 ratings in chunks of 7, the last of 5
    chunked = recommend.load_movielens(tiny_tfds)
    assert chunked.user_ids.tolist() == whole.user_ids.tolist()
    assert chunked.movie_titles.tolist() == whole.movie_titles.tolist()
    # Users and titles are numbered by their sorted order, whichever chunk first had them.
    assert chunked.users.tolist() == sorted(set(whole.user_ids.tolist()))
    np.testing.assert_array_equal(chunked.rating_users, whole.rating_users)


def test_a_rating_without_stars_reads_as_none_and_weighs_as_an_average_one():
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"7"])),
                "movie_title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"Heat (1995)"])),
            }
        )
    )
    parsed = tf.io.parse_example([example.SerializeToString()], recommend.RATING_FEATURES)
    assert parsed["user_rating"].numpy().tolist() == [0.0]
    data = from_ratings(
        np.array([b"7", b"8"], dtype=object),
        np.array([b"Heat (1995)"] * 2, dtype=object),
        np.array([b"Heat (1995)"], dtype=object),
        stars=np.array([parsed["user_rating"].numpy()[0], 4.0]),
    )
    np.testing.assert_allclose(tuned.rating_weights(data, recipes.TUNED), [6.0, 6.0])
