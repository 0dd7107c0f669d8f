"""The command line on the tiny dataset: output formats, and one clear line for every mistake."""

import json
import re

import pytest

import recommend
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


EPOCH_LINE = re.compile(r"  epoch (\d+)/(\d+): loss (\d+\.\d{3}) per rating")
STOPPED = re.compile(
    r"  (?:converged in epoch (?P<epoch>\d+) of at most (?P<most>\d+)"
    r"|did not converge within --epochs (?P<within>\d+))"
    r": the loss, (?P<loss>\d+\.\d{4}) per rating, "
    r"(?:has no earlier epoch|changed by (?P<change>[+-]\d+\.\d{3})%)"
)


def tuned_run(capsys, tiny_tfds, epochs: int) -> tuple[list[float], re.Match]:
    """The losses each epoch's progress line gave, and the last line, why training stopped, as matched."""
    # One number a vector, so that it converges well within the test's 15 epochs (each gets a progress line
    # up to 20; the recommendations are then the same order for everyone, so only their form is checked).
    question = ["--user", "1", "--k", "3", "--tuned", "--embedding-dim", "1", "--json"]
    question += ["--data-dir", tiny_tfds]
    status, out, err = run(capsys, *question, "--epochs", str(epochs))
    assert status == 0
    assert len(json.loads(out)["recommendations"]) == 3
    plural = "s" if epochs != 1 else ""
    assert (
        f"at most {epochs} epoch{plural} of alternating least squares, stopping at the first that changes "
        "the loss by under 0.1%" in err
    )
    assert "implicit ALS's loss over all 11 titles, each rating weighted by its stars" in err
    epoch_lines = [EPOCH_LINE.match(line) for line in err.splitlines() if EPOCH_LINE.match(line)]
    assert [int(line[1]) for line in epoch_lines] == list(range(1, len(epoch_lines) + 1))
    assert all(int(line[2]) == epochs for line in epoch_lines)
    stopped = STOPPED.match(err.splitlines()[-1])
    assert stopped, err
    losses = [float(line[3]) for line in epoch_lines]
    assert float(stopped["loss"]) == pytest.approx(losses[-1], abs=0.0006)  # the last epoch's, to 4 places
    return losses, stopped


def test_tuned_training_recommends_too_and_says_why_it_stopped(tiny_tfds, capsys):
    # Trained until it converges; the same seed then trains the same passes under a smaller --epochs.
    losses, stopped = tuned_run(capsys, tiny_tfds, 15)
    converged_in = len(losses)
    assert 2 <= converged_in < 15 and stopped["epoch"] == str(converged_in) and stopped["most"] == "15"
    assert abs(float(stopped["change"])) < 0.1 and stopped.string.endswith("(under 0.1%)")

    # The epoch before changed the loss by 0.1% or more: stopped there, training did not converge.
    before, stopped = tuned_run(capsys, tiny_tfds, converged_in - 1)
    assert before == losses[: converged_in - 1] and stopped["within"] == str(converged_in - 1)
    if converged_in > 2:
        assert abs(float(stopped["change"])) >= 0.1
        assert stopped.string.endswith("in the last epoch (not under 0.1%); a larger --epochs trains longer")

    # One epoch has nothing to be compared with, whatever its loss: the line says so.
    first, stopped = tuned_run(capsys, tiny_tfds, 1)
    assert first == losses[:1] and stopped["within"] == "1" and stopped["change"] is None
    assert stopped.string.endswith(
        "has no earlier epoch to compare with; a larger --epochs trains until it converges"
    )


def test_the_tuned_loss_can_be_trained_by_adam_instead(tiny_tfds, capsys):
    question = ["--user", "1", "--k", "3", "--tuned", "--json", "--data-dir", tiny_tfds, "--epochs", "2"]
    status, out, err = run(capsys, *question, "--optimizer", "adam")
    assert status == 0
    assert len(json.loads(out)["recommendations"]) == 3
    # Adam's rate and batches in the tuned recipe, a fixed number of epochs, the same loss.
    assert "2 epochs, batches of 100,000, Adam 0.05, implicit ALS's loss over all 11 titles" in err
    assert "converged" not in err and "alternating" not in err


def test_a_long_run_of_short_epochs_reports_every_tenth_and_the_last(tiny_tfds, capsys):
    status, _, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "25")
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
