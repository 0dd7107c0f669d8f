"""--dataset: the larger MovieLens sizes, each in its own file format, through TFDS's real builders."""

import dataclasses
import json

import numpy as np
import pytest

import recommend
from beyond import big_data, download, evaluation, recipes
from conftest import (
    assert_same_numbers,
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


def test_sizes_that_cannot_fit_whatever_the_data_are_refused_before_any_data_is_read(capsys, monkeypatch):
    monkeypatch.setattr(big_data, "available_memory_bytes", lambda: 8 * 2**30)

    def must_not_be_read(*args, **kwargs):
        raise AssertionError("the sizes alone decided: no data should be read")

    monkeypatch.setattr(download, "load_movielens", must_not_be_read)
    # The solver's d x d matrices alone: 3 x 50,000^2 floats are 28 GiB, whatever the data.
    for question in (["--user", "1"], ["--evaluate"]):
        status, out, err = run(capsys, *question, "--tuned", "--embedding-dim", "50000")
        assert_one_line_error(
            status, out, err, "--embedding-dim 50000 need about", "whatever the data", "8.0 GiB",
            "choose a smaller --embedding-dim",
        )  # fmt: skip


@pytest.mark.parametrize(
    "flags, sizes, fix",
    [
        ([], "--embedding-dim 200000 and --batch-size 4096", "--batch-size or --embedding-dim"),
        (["--tuned"], "--embedding-dim 200000 on 40 ratings", "--embedding-dim"),  # the solver has no batches
    ],
)
def test_sizes_the_data_makes_too_large_are_refused_before_training(
    flags, sizes, fix, tiny_tfds, capsys, monkeypatch
):
    recipe = recipes.choose("--tuned" in flags, None)
    recipe = dataclasses.replace(recipe, embedding_dim=200_000)
    # Less than the sizes need with the tiny data's users, movies and ratings, more than they need alone.
    alone, with_data = recipe.memory_bytes(big_data.Sizes()), recipe.memory_bytes(
        big_data.sizes_of(tiny_movielens())
    )
    assert alone < with_data
    monkeypatch.setattr(big_data, "available_memory_bytes", lambda: (alone + with_data) // 2)
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", *flags, "--data-dir", tiny_tfds, "--embedding-dim", "200000"
    )
    assert_one_line_error(status, out, err, f"{sizes} need about", f"choose a smaller {fix}")
    assert "whatever the data" not in err and "Training" not in err


def test_the_gradient_estimate_counts_tables_optimizer_slots_batches_and_the_scores():
    # 10 users and 20 movies (plus one unknown row each), 4 numbers each: weights, a gradient and Adagrad's
    # accumulators are 3 copies of (11 + 21) x 4 floats. A batch of 8 gathers its 8 vectors 8 times over, and
    # has at most 8 x 8 distinct scores, kept 4 times for the softmax and its gradient. Each of the 100
    # ratings is fed as 8 bytes.
    sizes = big_data.Sizes(users=10, movies=20, ratings=100, most_ratings_of_one=30)
    need = big_data.gradient_training_bytes(
        sizes, 4, 8, optimizer_slots=1, shuffled=False, implicit_als=False
    )
    assert need == 3 * (11 + 21) * 4 * 4 + 8 * 8 * 4 * 4 + 100 * 8 + 4 * 8 * 8 * 4
    # Adam keeps one more copy of the tables; shuffling, a buffer of every rating.
    adam = big_data.gradient_training_bytes(sizes, 4, 8, optimizer_slots=2, shuffled=True, implicit_als=False)
    assert adam - need == (11 + 21) * 4 * 4 + 100 * big_data.SHUFFLED_BYTES_PER_RATING


def test_a_huge_batch_fits_because_only_distinct_users_and_movies_are_scored():
    sizes = big_data.Sizes(users=943, movies=1664, ratings=100_000, most_ratings_of_one=583)
    small, huge = (
        big_data.gradient_training_bytes(sizes, 64, batch, 1, shuffled=False, implicit_als=False)
        for batch in (4096, 100_000)
    )
    assert huge < 300 * 2**20  # megabytes, not the 40 GB of a 100,000 x 100,000 score matrix
    assert small < huge


def test_the_sizes_are_the_datas_counts():
    sizes = big_data.sizes_of(tiny_movielens())
    # 8 users, 11 titles, 40 ratings; user 8 rated six films, more than any film was rated (4 each).
    assert sizes == big_data.Sizes(users=8, movies=11, ratings=40, most_ratings_of_one=6)


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
    assert_same_numbers(chunked, whole)
