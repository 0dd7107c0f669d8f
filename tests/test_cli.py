"""The command line on the tiny dataset: output formats, and one clear line for every mistake."""

import json
import os
import re
import subprocess
import sys

import pytest

import recommend
from beyond import options
from conftest import PLANTED_MOVIE

TINY_TRAINING = ["--epochs", "30", "--embedding-dim", "8", "--batch-size", "64"]


def run(capsys, *argv):
    status = recommend.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_the_table_lists_the_planted_movie_first(tiny_tfds, capsys):
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, *TINY_TRAINING)
    assert status == 0
    heading, columns, first, *rest = out.splitlines()
    assert heading == "Top 3 movies for user 1, leaving out movies they have rated:"
    assert columns.split() == ["rank", "title", "score"]
    rank, title, score = re.fullmatch(r"\s*(\d+)  (.+?)\s+(-?\d+\.\d\d)", first).groups()
    assert (rank, title) == ("1", PLANTED_MOVIE)
    assert len(rest) == 2
    assert "epoch 30/30" in err  # progress goes to stderr, never into the table


def test_json_is_one_document_with_ranks_and_descending_scores(tiny_tfds, capsys):
    status, out, _ = run(capsys, "--user", "1", "--k", "7", "--json", "--data-dir", tiny_tfds, *TINY_TRAINING)
    assert status == 0
    document = json.loads(out)
    assert document["user"] == "1"
    recommendations = document["recommendations"]
    assert [item["rank"] for item in recommendations] == list(range(1, 8))
    scores = [item["score"] for item in recommendations]
    assert scores == sorted(scores, reverse=True)
    assert recommendations[0]["title"] == PLANTED_MOVIE
    assert len({item["title"] for item in recommendations}) == 7  # no title twice


def test_tuned_training_recommends_too(tiny_tfds, capsys):
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--tuned", "--json", "--data-dir", tiny_tfds, "--epochs", "2"
    )
    assert status == 0
    assert len(json.loads(out)["recommendations"]) == 3
    assert "Adam 0.05" in err  # the tuned optimizer and rate, with the tutorial's overridden epochs
    assert "2 epochs" in err
    assert "implicit ALS's loss over all 11 titles, each rating weighted by its stars" in err


def test_a_long_run_of_short_epochs_reports_every_tenth_and_the_last(tiny_tfds, capsys):
    status, _, err = run(
        capsys, "--user", "1", "--k", "3", "--tuned", "--data-dir", tiny_tfds, "--epochs", "25"
    )
    assert status == 0
    reported = re.findall(r"  epoch (\d+)/25: loss", err)
    assert reported == ["1", "11", "21", "25"]


def test_timings_name_every_phase(tiny_tfds, capsys):
    status, _, err = run(
        capsys, "--user", "1", "--k", "3", "--timings", "--data-dir", tiny_tfds, "--epochs", "1"
    )
    assert status == 0
    timings = [line for line in err.splitlines() if line.startswith("timings:")]
    assert len(timings) == 1
    for phase in ("import", "load", "vocabularies", "training", "indexing", "query", "total"):
        assert f" {phase} " in timings[0]
    assert re.search(r"; peak memory \d+\.\d\d GiB$", timings[0])


def test_long_work_says_how_far_it_has_got(tiny_tfds, capsys, monkeypatch):
    # Every step counts as long here: with no pause between reports, each one reports.
    monkeypatch.setattr(recommend, "PROGRESS_EVERY_SECONDS", 0)
    monkeypatch.setattr(recommend, "READ_CHUNK_SIZE", 16)
    status, out, err = run(
        capsys, "--evaluate", "--data-dir", tiny_tfds, "--epochs", "2", "--batch-size", "8"
    )
    assert status == 0 and out.startswith("Held-out evaluation")
    # 40 ratings read 16 at a time; 32 training ratings in 4 batches of 8; 8 held-out ratings in one batch.
    assert re.findall(r"read (\d+) ratings of movielens/100k-ratings \(\d+s\)", err) == ["16", "32", "40"]
    assert "  epoch 1/2: 4 of 4 batches (" in err and "  epoch 2/2: 4 of 4 batches (" in err
    assert "  top-k accuracy: 1 of 1 batches (" in err
    assert "  ranked the catalogue for 8 of 8 users (" in err


def assert_one_line_error(status, out, err, *fragments):
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("recommend.py: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--k", "0"], "--k: must be at least 1"),
        (["--k", "-3"], "--k: must be at least 1"),
        (["--k", "ten"], "--k: expected a whole number"),
        (["--epochs", "0"], "--epochs: must be at least 1"),
        (["--batch-size", "0"], "--batch-size: must be at least 1"),
        (["--embedding-dim", "-1"], "--embedding-dim: must be at least 1"),
        (["--embedding-dim", "2.5"], "--embedding-dim: expected a whole number"),
        (["--learning-rate", "0"], "--learning-rate: must be a positive finite number"),
        (["--learning-rate", "-0.1"], "--learning-rate: must be a positive finite number"),
        (["--learning-rate", "nan"], "--learning-rate: must be a positive finite number"),
        (["--learning-rate", "inf"], "--learning-rate: must be a positive finite number"),
        (["--learning-rate", "fast"], "--learning-rate: expected a number"),
        (["--save-dir", "a", "--load-dir", "b"], "not allowed with argument"),
        (["--seed", "-1"], "--seed: must be from 0 to 4294967295"),
        (["--seed", str(2**32)], "--seed: must be from 0 to 4294967295"),
        (["--load-dir", ""], "--load-dir needs a folder name"),
        (["--save-dir", ""], "--save-dir needs a folder name"),
    ],
)
def test_bad_options_are_refused_in_one_line(argv, fragment, capsys):
    assert_one_line_error(*run(capsys, "--user", "1", *argv), fragment)


def test_a_question_is_required(capsys):
    assert_one_line_error(
        *run(capsys), "one of the arguments --user --similar-to --liked --evaluate is required"
    )


@pytest.mark.parametrize("user", ["9999", "abc", "", " 1"])
def test_an_unknown_user_is_refused_before_training(user, tiny_tfds, capsys):
    # One line and nothing else, so no training started either.
    assert_one_line_error(
        *run(capsys, "--user", user, "--data-dir", tiny_tfds),
        f"user {user!r} is not in the data; user ids are 1-8",
    )


def test_k_larger_than_the_unrated_movies_is_refused_before_training(tiny_tfds, capsys):
    # The catalogue has 11 titles; user 1 rated 4 of them.
    assert_one_line_error(
        *run(capsys, "--user", "1", "--k", "8", "--data-dir", tiny_tfds),
        "--k 8 is more than the 7 movies user 1 has not rated",
    )


def test_k_larger_than_the_catalogue_is_refused_with_include_rated(tiny_tfds, capsys):
    assert_one_line_error(
        *run(capsys, "--user", "1", "--k", "12", "--include-rated", "--data-dir", tiny_tfds),
        "--k 12 is more than the 11 movies in the catalogue",
    )


def test_k_can_be_every_unrated_movie(tiny_tfds, capsys):
    status, out, _ = run(
        capsys, "--user", "1", "--k", "7", "--json", "--data-dir", tiny_tfds, "--epochs", "1"
    )
    assert status == 0
    assert len(json.loads(out)["recommendations"]) == 7


def test_help_shows_the_tutorial_defaults(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    words = " ".join(out.split())  # argparse wraps long help lines
    for default in (
        "(default: 10)",
        "(default: 3; 100 with --tuned)",
        "(default: 64)",
        "(default: 4096; 100000 with --tuned)",
        "(default: 0.5; 0.05 with --tuned)",
        "(default: 42)",
    ):
        assert default in words


@pytest.mark.parametrize(
    "ids, expected",
    [
        (["3", "1", "2", "10"], "1-3, 10"),
        (["7"], "7"),
        ([str(n) for n in range(1, 944)], "1-943"),
        (["b", "a"], "a, b"),
    ],
)
def test_user_ids_are_described_as_ranges(ids, expected):
    assert options.describe_ids(ids) == expected


def test_the_script_run_as_a_program_prints_only_its_answer(tiny_tfds):
    """stdout carries the JSON alone, and TensorFlow's C++ start-up lines never reach stderr."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recommend.py")
    completed = subprocess.run(
        [
            sys.executable,
            script,
            "--user",
            "1",
            "--k",
            "3",
            "--json",
            "--data-dir",
            tiny_tfds,
            *TINY_TRAINING,
        ],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["recommendations"][0]["title"] == PLANTED_MOVIE
    assert len(completed.stdout.splitlines()) == 1
    for noise in ("I0000", "E0000", "oneDNN", "cuda", "WARNING"):
        assert noise not in completed.stderr
