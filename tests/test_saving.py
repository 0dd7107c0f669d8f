"""Saving a trained recommender and answering from it without data or training."""

import json
import os
import subprocess
import sys

import pytest

import recommend
from test_cli import TINY_TRAINING, assert_one_line_error, run

QUESTIONS = [
    ["--user", "1"],  # the default k is 10, more than user 1's 7 unrated titles
    ["--user", "1", "--k", "7"],
    ["--user", "1", "--k", "11", "--include-rated"],
    ["--user", "8", "--k", "2"],
    ["--user", "5", "--k", "3", "--json"],
]


@pytest.fixture
def saved(tiny_tfds, tmp_path, capsys):
    """A recommender trained on the tiny dataset and saved, with what the training runs printed."""
    target = str(tmp_path / "models" / "tiny")
    answers = {}
    for question in QUESTIONS:
        status, out, err = run(
            capsys, *question, "--data-dir", tiny_tfds, *TINY_TRAINING, "--save-dir", target
        )
        answers[tuple(question)] = (status, out, err.splitlines()[-1])
    return target, answers


def test_loading_prints_exactly_what_the_training_run_printed(saved, capsys):
    target, answers = saved
    for question, (status, out, last_err_line) in answers.items():
        assert run(capsys, *question, "--load-dir", target)[:2] == (status, out)
        if status == 2:
            assert last_err_line.startswith("recommend.py: error: --k 10 is more than the 7 movies user 1")


def test_loading_needs_neither_the_dataset_nor_training(saved, capsys, monkeypatch):
    target, answers = saved

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("--load-dir must not read the dataset or train")

    monkeypatch.setattr(recommend, "load_movielens", must_not_be_called)
    monkeypatch.setattr(recommend, "train", must_not_be_called)
    status, out, err = run(capsys, "--user", "1", "--k", "7", "--load-dir", target)
    assert (status, out) == answers[("--user", "1", "--k", "7")][:2]
    assert err == ""


def test_the_saved_model_is_a_plain_savedmodel_another_program_can_serve(saved):
    target, answers = saved
    expected = [
        item["title"]
        for item in json.loads(answers[("--user", "5", "--k", "3", "--json")][1])["recommendations"]
    ]
    program = (
        "import sys, tensorflow as tf\n"
        "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "result = serve(user_ids=tf.constant(['5']), k=tf.constant(3), include_rated=tf.constant(False))\n"
        "print('\\n'.join(title.decode() for title in result['titles'][0].numpy()))\n"
    )
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("TF_USE_LEGACY_KERAS", None)  # a plain TensorFlow program, not this script
    completed = subprocess.run(
        [sys.executable, "-c", program, target], capture_output=True, text=True, env=environment, check=True
    )
    assert completed.stdout.splitlines() == expected


def test_saving_over_a_saved_recommender_replaces_it(saved, tiny_tfds, capsys):
    target, answers = saved
    question = ["--user", "1", "--k", "7", "--json"]
    status, retrained, _ = run(
        capsys, *question, "--data-dir", tiny_tfds, "--epochs", "1", "--seed", "5", "--save-dir", target
    )
    assert status == 0
    assert run(capsys, *question, "--load-dir", target)[1] == retrained
    with open(os.path.join(target, "recommender.json")) as file:
        assert json.load(file)["training"]["epochs"] == 1
    assert sorted(os.listdir(os.path.dirname(target))) == ["tiny"]  # nothing left beside it


def test_an_interrupted_save_leaves_the_previous_model_untouched(saved, tiny_tfds, capsys, monkeypatch):
    target, answers = saved
    before = snapshot(target)

    def interrupted_save(module, directory, **kwargs):
        open(os.path.join(directory, "saved_model.pb"), "wb").write(b"half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(recommend.tf.saved_model, "save", interrupted_save)
    status, _, err = run(
        capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1", "--save-dir", target
    )
    assert status == 130 and "interrupted" in err
    assert snapshot(target) == before
    assert sorted(os.listdir(os.path.dirname(target))) == ["tiny"]


def test_a_save_that_fails_while_swapping_puts_the_previous_model_back(saved, tiny_tfds, capsys, monkeypatch):
    target, _ = saved
    before = snapshot(target)
    rename = os.rename

    def interrupted_rename(source, destination):
        if os.path.basename(source).startswith(".tiny.saving-"):  # the finished new model moving in
            raise KeyboardInterrupt
        rename(source, destination)

    monkeypatch.setattr(recommend.os, "rename", interrupted_rename)
    status, _, _ = run(
        capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--epochs", "1", "--save-dir", target
    )
    assert status == 130
    assert snapshot(target) == before
    assert sorted(os.listdir(os.path.dirname(target))) == ["tiny"]


def test_a_saved_recommender_holding_other_files_too_is_refused(saved, tiny_tfds, capsys):
    target, _ = saved
    with open(os.path.join(target, "notes.txt"), "w") as file:
        file.write("mine")
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--save-dir", target)
    assert_one_line_error(status, out, err, "not a saved recommender")
    assert open(os.path.join(target, "notes.txt")).read() == "mine"


def test_a_save_dir_inside_a_file_is_refused_before_training(tiny_tfds, tmp_path, capsys):
    (tmp_path / "plain-file").write_text("x")
    target = str(tmp_path / "plain-file" / "model")
    status, out, err = run(capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--save-dir", target)
    assert_one_line_error(status, out, err, "cannot be created")


def snapshot(directory):
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                files[os.path.relpath(path, directory)] = file.read()
    return files


def test_a_folder_holding_other_files_is_refused_and_left_alone(tiny_tfds, tmp_path, capsys):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.txt").write_text("precious")
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, "--save-dir", str(folder)
    )
    assert_one_line_error(status, out, err, "not a saved recommender")
    assert os.listdir(folder) == ["chapter1.txt"]
    assert (folder / "chapter1.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "kind, fragment", [("missing", "does not exist"), ("empty", "is empty"), ("foreign", "does not hold")]
)
def test_loading_from_a_folder_without_a_saved_recommender_is_refused(kind, fragment, tmp_path, capsys):
    folder = tmp_path / kind
    if kind != "missing":
        folder.mkdir()
    if kind == "foreign":
        (folder / "saved_model.pb").write_bytes(b"someone else's model")
    assert_one_line_error(*run(capsys, "--user", "1", "--load-dir", str(folder)), fragment)


def test_a_saved_recommender_that_is_damaged_is_refused(saved, capsys):
    target, _ = saved
    with open(os.path.join(target, "saved_model.pb"), "wb") as file:
        file.write(b"damaged")
    assert_one_line_error(
        *run(capsys, "--user", "1", "--k", "3", "--load-dir", target), "could not be loaded"
    )


def test_training_flags_with_load_dir_are_ignored_with_a_note(saved, capsys):
    target, answers = saved
    status, out, err = run(
        capsys, "--user", "1", "--k", "7", "--epochs", "9", "--tuned", "--load-dir", target
    )
    assert (status, out) == answers[("--user", "1", "--k", "7")][:2]
    assert "note: --tuned, --epochs ignored" in err


def test_evaluate_cannot_be_combined_with_saving(capsys):
    assert_one_line_error(*run(capsys, "--evaluate", "--load-dir", "somewhere"), "--evaluate")
