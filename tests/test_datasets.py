"""--dataset: the larger MovieLens sizes, each in its own file format, through TFDS's real builders."""

import json

import numpy as np

import recommend
from beyond import download, evaluation
from conftest import ALPHA, MOVIE_TITLES, PLANTED_MOVIE, tiny_movielens, tiny_ratings, tiny_stars
from test_cli import TINY_TRAINING, assert_one_line_error, run


def test_every_size_reads_the_same_ratings_from_its_own_format(tiny_tfds_larger_size):
    size, data_dir = tiny_tfds_larger_size
    data = recommend.load_movielens(data_dir, size=size)
    assert data.size == size
    expected = sorted(
        (user.encode(), title.encode(), stars) for (user, title), stars in zip(tiny_ratings(), tiny_stars())
    )
    assert sorted(zip(data.user_ids, data.movie_titles, data.rating_stars.tolist())) == expected
    assert sorted(data.catalogue) == sorted({title.encode() for title in MOVIE_TITLES})


def test_every_size_trains_and_recommends_the_planted_movie(tiny_tfds_larger_size, capsys):
    size, data_dir = tiny_tfds_larger_size
    status, out, err = run(
        capsys, "--dataset", size, "--user", "1", "--k", "3", "--json", "--data-dir", data_dir, *TINY_TRAINING
    )
    assert status == 0, err
    assert json.loads(out)["recommendations"][0]["title"] == PLANTED_MOVIE
    status, out, _ = run(
        capsys, "--dataset", size, "--liked", "alpha 1", "--liked", "alpha 2", "--k", "3", "--json",
        "--data-dir", data_dir, *TINY_TRAINING,
    )  # fmt: skip
    assert {item["title"] for item in json.loads(out)["recommendations"]} == set(ALPHA[2:])


def test_every_size_evaluates_on_an_80_20_split_of_its_own_ratings(tiny_tfds_larger_size, capsys):
    size, data_dir = tiny_tfds_larger_size
    status, out, err = run(
        capsys, "--dataset", size, "--evaluate", "--json", "--data-dir", data_dir, "--epochs", "2"
    )
    assert status == 0, err
    assert len(tiny_ratings()) == 40
    assert json.loads(out)["split"] == {"train": 32, "test": 8}


def test_user_ids_in_messages_come_from_the_dataset(tiny_tfds_larger_size, capsys):
    size, data_dir = tiny_tfds_larger_size
    assert_one_line_error(
        *run(capsys, "--dataset", size, "--user", "943", "--data-dir", data_dir), "user ids are 1-8"
    )


def test_a_saved_recommender_remembers_its_dataset(tiny_tfds_larger_size, tmp_path, capsys):
    size, data_dir = tiny_tfds_larger_size
    target = str(tmp_path / "model")
    common = ["--user", "1", "--k", "3", "--json"]
    status, trained, _ = run(capsys, *common, "--dataset", size, "--data-dir", data_dir, "--epochs", "1",
                             "--save-dir", target)  # fmt: skip
    assert status == 0
    with open(f"{target}/recommender.json") as file:
        assert json.load(file)["dataset"] == size
    status, loaded, err = run(capsys, *common, "--dataset", size, "--load-dir", target)
    assert (status, loaded) == (0, trained)
    assert "note: --dataset ignored" in err


def test_the_split_scales_with_the_number_of_ratings_and_covers_them_all():
    data = tiny_movielens()
    train_rows, test_rows = evaluation.split_like_the_tutorial(data)
    assert (len(train_rows), len(test_rows)) == (32, 8)  # 40 ratings
    assert sorted(np.concatenate([train_rows, test_rows])) == list(range(40))


def test_no_data_for_a_size_names_that_size_archive(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing answers: offline
    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT_SECONDS", 1)
    status, out, err = run(capsys, "--dataset", "1m", "--user", "1", "--data-dir", str(tmp_path))
    assert status == 1 and out == ""
    assert "ml-1m.zip" in err and "ml-100k" not in err
    assert "--download-url https://<mirror>/ml-1m.zip" in err
