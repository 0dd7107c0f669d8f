"""The options (beyond/options.py): every mistake refused in one line, before any data is read or
anything trained, and --help showing the tutorial's defaults."""

import json

import pytest

from beyond import options
from test_cli import assert_one_line_error, run


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


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--optimizer", "als"], "--optimizer als needs --tuned"),
        (["--tuned", "--distribute", "mirrored"], "for --distribute, add --optimizer adam"),
        (["--tuned", "--optimizer", "als", "--distribute", "mirrored"], "on one device"),
    ],
)
@pytest.mark.parametrize("question", [["--user", "1"], ["--evaluate"]])
def test_alternating_least_squares_is_refused_where_it_cannot_train(question, argv, fragment, capsys):
    # Refused before any data is read: there is no MovieLens where TFDS would look.
    assert_one_line_error(*run(capsys, *question, "--data-dir", "/nonexistent/tfds", *argv), fragment)


def test_a_learning_rate_or_batch_size_for_alternating_least_squares_is_noted_and_ignored(tiny_tfds, capsys):
    question = ["--user", "1", "--k", "3", "--json", "--tuned", "--data-dir", tiny_tfds, "--epochs", "3"]
    plain = run(capsys, *question)
    flagged = run(capsys, *question, "--learning-rate", "1e30", "--batch-size", "2")
    assert flagged[0] == 0 and flagged[1] == plain[1]  # the same recommendations, scores and all
    note = "note: --learning-rate, --batch-size ignored: alternating least squares takes no steps"
    assert flagged[2].startswith(note) and "note:" not in plain[2]


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
        "(default: 3; 20 with --tuned; 100 with --tuned --optimizer adam)",
        "(default: 64)",
        "(default: 4096; 100000 with --tuned --optimizer adam)",
        "(default: 0.5; 0.05 with --tuned --optimizer adam)",
        "(default: adagrad; als with --tuned)",
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
