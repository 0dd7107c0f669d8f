"""Loading MovieLens through TFDS, offline: mocked data, and clear failures when there is none."""

import os
import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

import recommend
from conftest import MOVIE_TITLES, tiny_ratings, write_metadata


def test_load_reads_who_rated_what_through_tfds(tiny_tfds):
    data = recommend.load_movielens(tiny_tfds)
    users, titles = zip(*tiny_ratings())
    assert [user.decode() for user in data.user_ids] == list(users)
    assert [title.decode() for title in data.movie_titles] == list(titles)
    assert len(data.movies_titles) == len(MOVIE_TITLES)
    # The catalogue lists each title once, sorted.
    assert [title.decode() for title in data.catalogue] == sorted(set(MOVIE_TITLES))


def test_load_keeps_only_the_two_features_the_model_needs(tmp_path):
    write_metadata(tmp_path)
    # TFDS's own random examples, with every MovieLens feature.
    with tfds.testing.mock_data(num_examples=25, data_dir=str(tmp_path)):
        data = recommend.load_movielens(str(tmp_path))
    assert len(data.user_ids) == len(data.movie_titles) == len(data.movies_titles) == 25
    assert all(isinstance(title, bytes) for title in data.movie_titles)
    assert np.all(data.catalogue[:-1] < data.catalogue[1:])


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def offline(monkeypatch):
    """Makes every download fail at once, online or not: all HTTPS goes to a closed local port."""
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
    assert os.path.join(str(tmp_path), "downloads", "manual") in err
    assert "--data-dir" in err and "TFDS_DATA_DIR" in err
    assert elapsed < 30  # TFDS alone would retry for minutes


def test_a_manually_placed_zip_is_used_instead_of_the_network(tmp_path, offline, capsys):
    manual_dir = tmp_path / "downloads" / "manual"
    manual_dir.mkdir(parents=True)
    (manual_dir / "ml-100k.zip").write_bytes(b"not the real archive")
    status = recommend.main(["--user", "42", "--data-dir", str(tmp_path)])
    _, err = capsys.readouterr()
    # TFDS took the file without going online, and its checksum check caught that it is not the real one.
    assert status == 1
    assert "Traceback" not in err
    assert "checksum" in err.lower()
