"""Loading MovieLens through TFDS, offline: what the loader reads, and clear failures without data."""

import os
import socket
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import recommend
from beyond import big_data, download, guards, tuned
from conftest import MOVIES_DATASET, MOVIE_TITLES, RATINGS_DATASET, from_ratings, tiny_ratings, tiny_stars


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


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def offline(monkeypatch):
    """Makes every download fail at once, online or not: all HTTP(S) goes to a closed local port."""
    proxy = f"http://127.0.0.1:{closed_port()}"
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, proxy)
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)


def test_no_data_and_no_download_explains_the_ways_out_in_seconds(tmp_path, offline, capsys):
    started = time.perf_counter()
    status = recommend.main(["--user", "42", "--data-dir", str(tmp_path)])
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    assert "Traceback" not in err
    assert "ml-100k.zip" in err
    assert os.path.join(str(tmp_path), "downloads", "manual") + "/" in err
    assert "--data-dir" in err and "TFDS_DATA_DIR" in err and "--download-url" in err
    assert elapsed < 30  # TFDS alone would retry for minutes


def test_a_manually_placed_zip_is_used_instead_of_the_network(tmp_path, offline, capsys):
    manual_dir = tmp_path / "downloads" / "manual"
    manual_dir.mkdir(parents=True)
    (manual_dir / "ml-100k.zip").write_bytes(b"not the real archive")
    status = recommend.main(["--user", "42", "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    # The file was checked without going online, and its SHA-256 shows it is not the real one.
    assert status == 1
    assert out == ""
    assert "Traceback" not in err
    assert "is not the registered ml-100k.zip: its SHA-256 is" in err


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


def test_rated_lists_count_a_rating_given_twice_once_and_leave_unrated_titles_out():
    data = from_ratings(
        np.array([b"1", b"2", b"1", b"1"], dtype=object),
        np.array([b"Heat", b"Fargo", b"Ran", b"Heat"], dtype=object),
        np.array([b"Heat", b"Fargo", b"Ran", b"Alien"], dtype=object),
    )
    # Titles sorted: Alien 0, Fargo 1, Heat 2, Ran 3; nobody rated Alien, so the catalogue is rows 1-3.
    assert data.catalogue.tolist() == [b"Fargo", b"Heat", b"Ran"]
    offsets, rows = big_data.rated_by_user(data)
    # User "1" rated Heat (catalogue row 1) twice and Ran (2); user "2" rated Fargo (0).
    assert offsets.tolist() == [0, 2, 3] and rows.tolist() == [1, 2, 0]
    assert big_data.ratings_per_title(data).tolist() == [1, 2, 1]


def test_sorted_distinct_gives_what_np_unique_gives():
    assert big_data.sorted_distinct(np.array([3, -1, 3, 2, -1, 3])).tolist() == [-1, 2, 3]
    assert big_data.sorted_distinct(np.array([7])).tolist() == [7]
    assert big_data.sorted_distinct(np.zeros(0, np.int64)).tolist() == []


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
    np.testing.assert_allclose(tuned.rating_weights(data, tuned.TUNED), [6.0, 6.0])
