"""--evaluate --repeat: the spread of the held-out metrics over seeds."""

import json
import math

import pytest

from beyond import evaluation
from test_cli import TINY_TRAINING, assert_one_line_error, run


def test_spread_is_the_mean_and_the_sample_standard_deviation():
    runs = [{"ndcg": 0.1, "recall": 0.5}, {"ndcg": 0.3, "recall": 0.5}, {"ndcg": 0.2, "recall": 0.5}]
    # Mean 0.2; deviations -0.1, 0.1, 0: sample variance (0.01 + 0.01) / (3 - 1) = 0.01, so std 0.1.
    assert evaluation.spread(runs) == {"ndcg": {"mean": 0.2, "std": 0.1}, "recall": {"mean": 0.5, "std": 0.0}}
    assert evaluation.spread(runs[:1]) == {
        "ndcg": {"mean": 0.1, "std": 0.0},
        "recall": {"mean": 0.5, "std": 0.0},
    }


def evaluate(capsys, tiny_tfds, *extra):
    status, out, err = run(capsys, "--evaluate", "--data-dir", tiny_tfds, *TINY_TRAINING, *extra)
    assert status == 0, err
    return out, err


def test_repeat_reports_the_spread_of_the_runs_it_would_make_one_by_one(tiny_tfds, capsys):
    out, err = evaluate(capsys, tiny_tfds, "--repeat", "3", "--seed", "7", "--json")
    results = json.loads(out)
    assert results["repeat"] == 3 and results["seeds"] == [7, 8, 9]
    assert "Run 3 of 3, seed 9" in err
    singles = [
        json.loads(evaluate(capsys, tiny_tfds, "--seed", str(seed), "--json")[0]) for seed in (7, 8, 9)
    ]
    for metric, summary in results["two_tower"].items():
        values = [single["two_tower"][metric] for single in singles]
        mean = sum(values) / 3
        std = math.sqrt(sum((value - mean) ** 2 for value in values) / 2)
        assert summary == {"mean": pytest.approx(mean, abs=1e-4), "std": pytest.approx(std, abs=1e-4)}
    # Most-popular has nothing random to vary: the same numbers, a spread of zero.
    for metric, summary in results["most_popular"].items():
        assert summary == {"mean": singles[0]["most_popular"][metric], "std": 0.0}


def test_without_repeat_the_json_keeps_plain_numbers(tiny_tfds, capsys):
    results = json.loads(evaluate(capsys, tiny_tfds, "--json")[0])
    assert "repeat" not in results
    assert all(isinstance(value, float) for value in results["two_tower"].values())


def test_the_repeat_table_shows_mean_and_spread(tiny_tfds, capsys):
    out, _ = evaluate(capsys, tiny_tfds, "--repeat", "2")
    lines = out.splitlines()
    assert lines[1] == "Mean ± standard deviation over 2 runs, seeds 42 to 43"
    assert lines[2].split() == ["metric", "two_tower", "most_popular"]
    assert all(line.count("±") == 2 for line in lines[3:])
    assert len(lines) == 3 + 7


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--user", "1", "--repeat", "3"], "--repeat repeats an --evaluate run"),
        (["--evaluate", "--repeat", "0"], "--repeat: must be at least 1"),
        (["--evaluate", "--repeat", "2", "--seed", "4294967295"], "runs past the largest seed"),
    ],
)
def test_repeat_mistakes_are_refused_in_one_line(argv, fragment, capsys):
    assert_one_line_error(*run(capsys, *argv), fragment)
