"""--dataset: the larger MovieLens sizes, each in its own file format, through TFDS's real builders."""

import dataclasses
import json
import time

import numpy as np

import recommend
from beyond import big_data, download, evaluation
from conftest import (
    ALPHA,
    MOVIE_TITLES,
    PLANTED_MOVIE,
    from_ratings,
    tiny_movielens,
    tiny_ratings,
    tiny_stars,
)
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


def test_sizes_that_cannot_fit_are_refused_in_seconds_with_the_need_and_the_limit(
    tiny_tfds, capsys, monkeypatch
):
    monkeypatch.setattr(big_data, "available_memory_bytes", lambda: 8 * 2**30)
    started = time.perf_counter()
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--embedding-dim", "200000000"
    )
    assert time.perf_counter() - started < 30
    assert_one_line_error(status, out, err, "--embedding-dim 200000000", "need about", "8.0 GiB")
    assert "Training" not in err
    # The tuned recipe's solver has no batches: its need is said by the ratings it solves.
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--tuned", "--data-dir", tiny_tfds, "--embedding-dim", "200000000"
    )
    assert_one_line_error(status, out, err, "--embedding-dim 200000000 on 40 ratings need about", "8.0 GiB")
    assert "Training" not in err


def test_the_estimate_counts_tables_optimizer_slots_and_the_batch_scores():
    # 10 users and 20 movies (plus one unknown row each), 4 numbers each: weights, gradients and Adagrad's
    # accumulators are 3 copies of (11 + 21) x 4 floats. A batch of 8 has at most 8 x 8 distinct scores,
    # kept a few times over for the softmax and its gradient.
    need = big_data.training_memory_bytes(num_users=10, num_movies=20, embedding_dim=4, batch_size=8)
    tables = 3 * (11 + 21) * 4 * 4
    assert tables < need < tables + 8 * 8 * 4 * 16 + 8 * 4 * 4 * 16


def test_the_solver_needs_its_layout_of_the_ratings_and_no_gradients():
    # 10 users and 20 movies of 4 numbers: the tables 4 x (11 + 21) x 4 floats; 100 ratings 44 bytes each.
    need = big_data.training_memory_bytes(10, 20, embedding_dim=4, batch_size=8, solved_ratings=100)
    assert need == 4 * (11 + 21) * 4 * 4 + 100 * 44
    # The synthetic 25M measured 0.94 GiB above the tutorial's recipe: the estimate covers it.
    solver = big_data.training_memory_bytes(162_541, 59_011, 64, 4096, True, 25_000_095)
    assert (
        0.94 * 2**30 < solver - big_data.training_memory_bytes(162_541, 59_011, 64, 4096, True) < 1.2 * 2**30
    )


def test_a_huge_batch_fits_because_only_distinct_users_and_movies_are_scored():
    small = big_data.training_memory_bytes(num_users=943, num_movies=1664, embedding_dim=64, batch_size=4096)
    huge = big_data.training_memory_bytes(
        num_users=943, num_movies=1664, embedding_dim=64, batch_size=100_000
    )
    assert huge < 200 * 2**20  # megabytes, not the 40 GB of a 100,000 x 100,000 score matrix
    assert small < huge


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


def test_the_chunked_loader_gives_the_cores_numbers_array_for_array(tiny_tfds_larger_size, monkeypatch):
    size, data_dir = tiny_tfds_larger_size
    whole = recommend.load_movielens(data_dir, size)
    monkeypatch.setattr(recommend, "READ_CHUNK_SIZE", 7)  # 40 ratings in chunks of 7, the last of 5
    chunked = big_data.load_movielens(data_dir, size)
    for field in dataclasses.fields(recommend.MovieLens):
        mine, core = getattr(chunked, field.name), getattr(whole, field.name)
        if isinstance(core, np.ndarray):
            assert mine.dtype == core.dtype, field.name
            np.testing.assert_array_equal(mine, core, err_msg=field.name)
        else:
            assert mine == core
