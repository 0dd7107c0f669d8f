"""MovieLens 1M and up, parsed once (beyond/ratings_cache.py): the numbers read back are the parsed ones,
a copy that is not whole or not of these files is parsed again, and a copy that cannot be kept never
changes the answer."""

import errno
import json
import os
import shutil
import threading

import numpy as np
import pytest

import recommend
from beyond import big_data, ratings_cache
from conftest import assert_same_numbers
from test_cli import TINY_TRAINING, run


@pytest.fixture
def larger(tiny_tfds_larger_size, tmp_path):
    """(size, data dir): a copy of the tiny dataset in a larger size's format, without the numbers other
    tests' runs kept in the original, for a test to keep its own in."""
    size, data_dir = tiny_tfds_larger_size
    copy = tmp_path / "tfds"
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("recommend.py"))
    return size, str(copy)


def test_the_numbers_read_back_are_the_parsed_ones_array_for_array(larger, capsys):
    size, data_dir = larger
    parsed = big_data.load_movielens(data_dir, size)
    first, how = ratings_cache.load_movielens(data_dir, size)
    assert how == "parsed and kept"
    assert_same_numbers(first, parsed)
    again, how = ratings_cache.load_movielens(data_dir, size)
    assert how == "read back"
    assert_same_numbers(again, parsed)
    assert capsys.readouterr().err == ""  # neither the first run nor a later one has anything to explain
    where = ratings_cache.folder(data_dir, size)
    assert sorted(os.listdir(where.parent)) == [where.name]  # nothing half-written beside it


def test_text_of_any_bytes_is_kept_exactly():
    texts = np.array([b"", b"a\x00", b"\x00", "Misérables, Les (1995)".encode(), b" trailing "], dtype=object)
    joined, ends = ratings_cache.as_bytes(texts)
    back = ratings_cache.as_texts(joined, ends)
    assert back.tolist() == texts.tolist() and back.dtype == object
    assert ratings_cache.as_texts(*ratings_cache.as_bytes(np.array([], dtype=object))).tolist() == []


def damage_truncated(where):
    path = where / "rating_users.npy"
    path.write_bytes(path.read_bytes()[:-3])


def damage_flipped(where):
    path = where / "rating_stars.npy"
    content = bytearray(path.read_bytes())
    content[-1] ^= 0x40  # the last star, a different number, the file as long as before
    path.write_bytes(bytes(content))


def damage_foreign(where):
    manifest = json.loads((where / ratings_cache.MANIFEST).read_text())
    manifest["format"] = "recommend.py MovieLens numbers, 0"
    (where / ratings_cache.MANIFEST).write_text(json.dumps(manifest))


def damage_garbled(where):
    (where / ratings_cache.MANIFEST).write_text("{ not json")


def damage_missing(where):
    (where / "titles.npy").unlink()


@pytest.mark.parametrize(
    "damage, why",
    [
        (damage_truncated, "damaged"),
        (damage_flipped, "damaged (rating_stars.npy is not the bytes kept)"),
        (damage_foreign, "from another version of recommend.py"),
        (damage_garbled, "unreadable"),
        (damage_missing, "damaged (No such file or directory)"),
    ],
)
def test_a_copy_that_is_not_whole_or_not_ours_is_parsed_again_with_one_line(damage, why, larger, capsys):
    size, data_dir = larger
    parsed, _ = ratings_cache.load_movielens(data_dir, size)
    where = ratings_cache.folder(data_dir, size)
    damage(where)
    capsys.readouterr()
    data, how = ratings_cache.load_movielens(data_dir, size)
    assert how == "parsed and kept"
    assert_same_numbers(data, parsed)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: the parsed numbers kept in {where} are {why}")
    assert err[0].endswith("; parsing again")
    # Parsed again, kept again, and whole: the next run reads it back.
    assert ratings_cache.load_movielens(data_dir, size)[1] == "read back"
    assert sorted(os.listdir(where.parent)) == [where.name]


def test_a_copy_made_from_other_prepared_files_is_parsed_again(larger, capsys):
    size, data_dir = larger
    ratings_cache.load_movielens(data_dir, size)
    # The prepared ratings change (here: one more file beside them), as a new prepare would change them.
    ratings_folder = recommend.tfds.builder(f"movielens/{size}-ratings", data_dir=data_dir).data_dir
    with open(os.path.join(ratings_folder, "added-by-a-later-prepare"), "w") as file:
        file.write("x")
    capsys.readouterr()
    assert ratings_cache.load_movielens(data_dir, size)[1] == "parsed and kept"
    assert "are from other prepared files than those here now; parsing again" in capsys.readouterr().err


def test_two_runs_at_once_both_answer_and_leave_one_whole_copy(larger):
    size, data_dir = larger
    parsed = big_data.load_movielens(data_dir, size)
    both_staged = threading.Barrier(2, timeout=60)
    write_arrays = ratings_cache.write_arrays

    def write_then_wait(data, staging):
        written = write_arrays(data, staging)
        both_staged.wait()  # each has its copy staged before either puts it in place
        return written

    results = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ratings_cache, "write_arrays", write_then_wait)
        runs = [
            threading.Thread(target=lambda: results.append(ratings_cache.load_movielens(data_dir, size)))
            for _ in range(2)
        ]
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join(timeout=120)
    assert [how for _, how in results] == ["parsed and kept"] * 2
    for data, _ in results:
        assert_same_numbers(data, parsed)
    where = ratings_cache.folder(data_dir, size)
    assert sorted(os.listdir(where.parent)) == [where.name]
    data, how = ratings_cache.load_movielens(data_dir, size)
    assert how == "read back"
    assert_same_numbers(data, parsed)


@pytest.mark.parametrize(
    "failure, why",
    [
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
    ],
)
def test_a_copy_that_cannot_be_kept_changes_nothing_of_the_answer(failure, why, larger, capsys, monkeypatch):
    size, data_dir = larger
    question = [
        "--dataset",
        size,
        "--user",
        "1",
        "--k",
        "3",
        "--json",
        "--data-dir",
        data_dir,
        *TINY_TRAINING,
    ]
    with monkeypatch.context() as patch:

        def fails(*args, **kwargs):
            raise failure

        patch.setattr(ratings_cache.np, "save", fails)
        status, unkept, err = run(capsys, *question)
    assert status == 0
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: the parsed numbers could not be kept in {ratings_cache.folder(data_dir, size).parent} ({why}); "
        "the next run parses again"
    ]
    where = ratings_cache.folder(data_dir, size)
    assert os.listdir(where.parent) == []  # nothing half-written, nothing to trust
    status, kept, _ = run(capsys, *question)
    assert (status, kept) == (0, unkept)
    status, read_back, err = run(capsys, *question)
    assert (status, read_back) == (0, unkept) and "note:" not in err


def test_a_file_where_the_copy_would_go_is_said_and_left_alone(larger, capsys):
    size, data_dir = larger
    in_the_way = ratings_cache.folder(data_dir, size).parent
    in_the_way.write_text("someone else's")
    data, how = ratings_cache.load_movielens(data_dir, size)
    assert how.startswith("parsed but not kept")
    assert in_the_way.read_text() == "someone else's"
    assert_same_numbers(data, big_data.load_movielens(data_dir, size))


def test_ctrl_c_while_keeping_leaves_nothing_half_written(larger, monkeypatch):
    size, data_dir = larger

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ratings_cache, "settle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ratings_cache.load_movielens(data_dir, size)
    assert os.listdir(ratings_cache.folder(data_dir, size).parent) == []


def test_timings_say_whether_the_numbers_were_parsed_or_read_back(larger, tiny_tfds, capsys):
    size, data_dir = larger

    def load_phase(*argv):
        status, _, err = run(capsys, "--user", "1", "--k", "3", "--epochs", "1", "--timings", *argv)
        assert status == 0, err
        return next(line for line in err.splitlines() if line.startswith("timings:")).split(", ")[1]

    assert load_phase("--dataset", size, "--data-dir", data_dir).endswith("s (parsed and kept)")
    assert load_phase("--dataset", size, "--data-dir", data_dir).endswith("s (read back)")
    assert load_phase("--data-dir", tiny_tfds).endswith("s (parsed)")  # 100k: the core's own loader, always
