"""Shared test data: a tiny MovieLens with planted tastes, served through a mocked TFDS, and the real
MovieLens 100k when TFDS can load it (through TFDS_DATA_DIR)."""

import csv
import dataclasses
import io
import os
import sys
import tempfile
import zipfile
from unittest import mock

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as `python recommend.py` sets it (beyond/launch.py)
import recommend  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from beyond import download  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

# Two groups of users with disjoint tastes: users 1-4 watch the Alpha movies, users 5-8 the Beta ones.
# User 1 has seen every Alpha movie but Alpha 5, so Alpha 5 is the one thing to recommend to them.
# "Déjà Vu (1997)" is the title of two movie ids, as 18 titles are in MovieLens.
# recommend.py, run as a program by the tests that need a real process.
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recommend.py")


def program_source(change: str, argv) -> str:
    """Python source that runs `python recommend.py ARGV` as a program after CHANGE (source that may
    replace a function of the `recommend` or `beyond` modules, as a fault would)."""
    return (
        f"import runpy, sys; sys.path.insert(0, {os.path.dirname(SCRIPT)!r}); import recommend; {change}; "
        f"sys.argv = ['recommend.py', *{list(argv)!r}]; runpy.run_path({SCRIPT!r}, run_name='__main__')"
    )


def assert_same_numbers(mine: recommend.MovieLens, theirs: recommend.MovieLens) -> None:
    """Every field of two MovieLens records equal: each array of the same type, value for value."""
    for field in dataclasses.fields(recommend.MovieLens):
        ours, other = getattr(mine, field.name), getattr(theirs, field.name)
        if isinstance(other, np.ndarray):
            assert ours.dtype == other.dtype, field.name
            np.testing.assert_array_equal(ours, other, err_msg=field.name)
            assert [type(value) for value in ours[:3]] == [type(value) for value in other[:3]], field.name
        else:
            assert ours == other, field.name


ALPHA = [f"Alpha {n} (2001)" for n in range(1, 6)]
BETA = [f"Beta {n} (2002)" for n in range(1, 6)]
SHARED_TITLE = "Déjà Vu (1997)"
MOVIE_TITLES = ALPHA + BETA + [SHARED_TITLE, SHARED_TITLE]
USERS = [str(user) for user in range(1, 9)]
PLANTED_USER, PLANTED_MOVIE = "1", "Alpha 5 (2001)"
RATINGS_DATASET, MOVIES_DATASET = download.dataset_names("100k")


def first_movie_ids() -> dict[str, int]:
    """Each title's movie id in the raw files (ids count from 1; a shared title's ratings go to its first)."""
    movie_ids = {}
    for movie_id, title in enumerate(MOVIE_TITLES, start=1):
        movie_ids.setdefault(title, movie_id)
    return movie_ids


def tiny_ratings() -> list[tuple[str, str]]:
    ratings = []
    for user in USERS:
        for title in ALPHA if int(user) <= 4 else BETA:
            if (user, title) != (PLANTED_USER, PLANTED_MOVIE):
                ratings.append((user, title))
    ratings.append(("8", SHARED_TITLE))
    return ratings


def tiny_stars() -> list[int]:
    """Each tiny rating's stars: 1, 2, 3, 4, 5 in turn, so that every number is read back in its place."""
    return [1 + number % 5 for number in range(len(tiny_ratings()))]


def from_ratings(user_ids, movie_titles, movies, size="100k", stars=None) -> "recommend.MovieLens":
    """A MovieLens from one user id and one title per rating (bytes) and the movies' titles, as the
    loader numbers them; without STARS every rating has 5."""
    users, rating_users = np.unique(np.asarray(user_ids, dtype=object), return_inverse=True)
    titles = np.unique(np.asarray(movies, dtype=object))
    rating_titles = np.searchsorted(titles, np.asarray(movie_titles, dtype=object)).astype(np.int32)
    assert (
        titles[rating_titles] == np.asarray(movie_titles, dtype=object)
    ).all(), "a rated title is no movie"
    catalogue_rows = np.flatnonzero(np.bincount(rating_titles, minlength=len(titles))).astype(np.int32)
    stars = np.full(len(rating_users), 5.0) if stars is None else stars
    return recommend.MovieLens(
        users,
        titles,
        rating_users.astype(np.int32),
        rating_titles,
        np.asarray(stars, np.float32),
        np.asarray(movies, dtype=object),
        catalogue_rows,
        size,
    )


def tiny_movielens() -> "recommend.MovieLens":
    users, titles = zip(*tiny_ratings())
    return from_ratings(
        user_ids=np.array([user.encode() for user in users], dtype=object),
        movie_titles=np.array([title.encode() for title in titles], dtype=object),
        movies=np.array([title.encode() for title in MOVIE_TITLES], dtype=object),
        stars=np.array(tiny_stars(), np.float32),
    )


def tiny_archive() -> bytes:
    """The tiny dataset as a zip laid out like GroupLens' ml-100k.zip (an ml-100k/ folder of u.* files)."""
    with tempfile.TemporaryDirectory() as scratch:
        write_raw_movielens(os.path.join(scratch, "ml-100k"))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name in sorted(os.listdir(os.path.join(scratch, "ml-100k"))):
                archive.write(os.path.join(scratch, "ml-100k", name), f"ml-100k/{name}")
    return buffer.getvalue()


def write_raw_movielens(folder) -> None:
    """Writes the tiny dataset in the format of GroupLens' ml-100k files (invented data, not MovieLens)."""
    os.makedirs(folder)
    movie_ids = first_movie_ids()
    with open(os.path.join(folder, "u.item"), "w", encoding="iso-8859-1") as items:
        for movie_id, title in enumerate(MOVIE_TITLES, start=1):
            items.write(
                f"{movie_id}|{title}|01-Jan-2001||http://example.invalid/|" + "|".join("0" * 19) + "\n"
            )
    with open(os.path.join(folder, "u.user"), "w") as users:
        users.writelines(f"{user}|30|F|other|00000\n" for user in USERS)
    with open(os.path.join(folder, "u.data"), "w") as ratings:
        ratings.writelines(
            f"{user}\t{movie_ids[title]}\t{stars}\t880000000\n"
            for (user, title), stars in zip(tiny_ratings(), tiny_stars())
        )


def write_raw_movielens_1m(folder) -> None:
    """The tiny dataset in the format of GroupLens' ml-1m files: "::" separators, ISO-8859-1."""
    os.makedirs(folder)
    movie_ids = first_movie_ids()
    with open(os.path.join(folder, "movies.dat"), "w", encoding="iso-8859-1") as movies:
        for movie_id, title in enumerate(MOVIE_TITLES, start=1):
            movies.write(f"{movie_id}::{title}::Drama|Comedy\n")
    with open(os.path.join(folder, "users.dat"), "w") as users:
        users.writelines(f"{user}::F::25::0::00000\n" for user in USERS)
    with open(os.path.join(folder, "ratings.dat"), "w") as ratings:
        ratings.writelines(
            f"{user}::{movie_ids[title]}::{stars}::880000000\n"
            for (user, title), stars in zip(tiny_ratings(), tiny_stars())
        )


def write_raw_movielens_csv(folder) -> None:
    """The tiny dataset in the CSV format of GroupLens' ml-20m and ml-25m files."""
    os.makedirs(folder)
    movie_ids = first_movie_ids()
    with open(os.path.join(folder, "movies.csv"), "w", encoding="utf-8", newline="") as movies:
        writer = csv.writer(movies)
        writer.writerow(["movieId", "title", "genres"])
        writer.writerows([movie_id, title, "Drama"] for movie_id, title in enumerate(MOVIE_TITLES, start=1))
    with open(os.path.join(folder, "ratings.csv"), "w", newline="") as ratings:
        writer = csv.writer(ratings)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        writer.writerows(
            [user, movie_ids[title], f"{stars:.1f}", 880000000]
            for (user, title), stars in zip(tiny_ratings(), tiny_stars())
        )


WRITERS = {"100k": write_raw_movielens, "1m": write_raw_movielens_1m}


def prepare_tiny(root, size: str) -> str:
    """A TFDS data dir holding the tiny dataset in SIZE's format, prepared offline by TFDS's own builder."""
    WRITERS.get(size, write_raw_movielens_csv)(root / "extracted" / f"ml-{size}")
    # The builder would download ml-<size>.zip and extract it; hand it the extracted tiny files instead.
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", return_value=str(root / "extracted")
    ):
        for name in download.dataset_names(size):
            tfds.builder(name, data_dir=str(root / "tfds")).download_and_prepare()
    return str(root / "tfds")


@pytest.fixture(scope="session", params=["1m", "20m", "25m"])
def tiny_tfds_larger_size(request, tmp_path_factory):
    """(size, data dir): the tiny dataset as each larger MovieLens size, in that size's own file format."""
    return request.param, prepare_tiny(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.fixture(scope="session")
def tiny_tfds(tmp_path_factory):
    """A TFDS data dir holding the tiny dataset, prepared offline by TFDS's own MovieLens builder."""
    return prepare_tiny(tmp_path_factory.mktemp("tiny"), "100k")


def real_movielens_reason() -> str | None:
    """Why the real dataset cannot be used here, or None when TFDS has it."""
    for name in (RATINGS_DATASET, MOVIES_DATASET):
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
    ratings = tfds.load(RATINGS_DATASET, split="train")
    ratings = ratings.map(lambda rating: {"user_id": rating["user_id"], "movie_title": rating["movie_title"]})
    columns = ratings.batch(200_000).get_single_element()
    return {key: value.numpy() for key, value in columns.items()}
