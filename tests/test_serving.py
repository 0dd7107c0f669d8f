"""Saving a trained recommender and answering from it without data or training."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

import recommend
from beyond import recipes
from test_cli import TINY_TRAINING, assert_one_line_error, run

QUESTIONS = [
    ["--user", "1"],  # the default k is 10, more than user 1's 7 unrated titles
    ["--user", "1", "--k", "7"],
    ["--user", "1", "--k", "11", "--include-rated"],
    ["--user", "8", "--k", "2"],
    ["--user", "5", "--k", "3", "--json"],
    ["--similar-to", "alpha 2", "--k", "4"],
    ["--similar-to", "Déjà Vu (1997)", "--k", "3", "--json"],
    ["--liked", "alpha 1", "--liked", "Alpha 2 (2001)", "--k", "3", "--json"],
    ["--liked", "beta 5", "--k", "2", "--include-rated"],
    ["--liked", "gamma"],  # no such title: refused alike, with or without the training data
]


@pytest.fixture(scope="module")
def trained(tiny_tfds, tmp_path_factory):
    """A recommender trained on the tiny dataset and saved, with what each training run printed.

    Every question trains with the same seed, so each saves the same model over the last."""
    target = str(tmp_path_factory.mktemp("trained") / "tiny")
    answers = {}
    for question in QUESTIONS:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = recommend.main(
                [*question, "--data-dir", tiny_tfds, *TINY_TRAINING, "--save-dir", target]
            )
        answers[tuple(question)] = (status, out.getvalue(), err.getvalue().splitlines()[-1])
    return target, answers


@pytest.fixture
def saved(trained, tmp_path):
    """A fresh copy of the trained recommender, for a test to load, damage or replace."""
    source, answers = trained
    target = tmp_path / "models" / "tiny"
    shutil.copytree(source, target)
    return str(target), answers


def test_loading_prints_exactly_what_the_training_run_printed(saved, capsys):
    target, answers = saved
    for question, (status, out, last_err_line) in answers.items():
        assert run(capsys, *question, "--load-dir", target)[:2] == (status, out)
        if status == 2:
            assert last_err_line.startswith("recommend.py: error: ")


def test_loading_needs_neither_the_dataset_nor_training(saved, capsys, monkeypatch):
    target, answers = saved

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("--load-dir must not read the dataset or train")

    monkeypatch.setattr(recommend, "load_movielens", must_not_be_called)
    monkeypatch.setattr(recommend, "train", must_not_be_called)
    status, out, err = run(capsys, "--user", "1", "--k", "7", "--load-dir", target)
    assert (status, out) == answers[("--user", "1", "--k", "7")][:2]
    assert err == ""


def plain_tensorflow(program, *argv):
    """Runs PROGRAM in a fresh Python with TensorFlow alone: not this script, not Keras 2."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run(
        [sys.executable, "-c", program, *argv], capture_output=True, text=True, env=environment
    )


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
    completed = plain_tensorflow(program, target)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == expected


def test_the_similar_and_liked_signatures_serve_a_plain_program_too(saved):
    target, answers = saved
    similar = json.loads(answers[("--similar-to", "Déjà Vu (1997)", "--k", "3", "--json")][1])["similar"]
    liked_question = ("--liked", "alpha 1", "--liked", "Alpha 2 (2001)", "--k", "3", "--json")
    liked = json.loads(answers[liked_question][1])["recommendations"]
    program = (
        "import sys, tensorflow as tf\n"
        "signatures = tf.saved_model.load(sys.argv[1]).signatures\n"
        "similar = signatures['similar_movies'](titles=tf.constant(['Déjà Vu (1997)']), k=tf.constant(3))\n"
        "print('|'.join(title.decode() for title in similar['titles'][0].numpy()))\n"
        "liked = signatures['recommend_for_liked'](\n"
        "    titles=tf.constant(['Alpha 1 (2001)', 'Alpha 2 (2001)']), k=tf.constant(3),\n"
        "    include_rated=tf.constant(False))\n"
        "print('|'.join(title.decode() for title in liked['titles'].numpy()))\n"
    )
    completed = plain_tensorflow(program, target)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "|".join(item["title"] for item in similar),
        "|".join(item["title"] for item in liked),
    ]


def test_a_plain_program_asking_the_impossible_gets_an_error_not_an_answer(saved):
    target, _ = saved
    program = (
        "import sys, tensorflow as tf\n"
        "signatures = tf.saved_model.load(sys.argv[1]).signatures\n"
        "known, unknown = tf.constant(['Alpha 1 (2001)']), tf.constant(['Alpha 1 (2001)', 'alpha 1'])\n"
        "no = tf.constant(False)\n"
        "questions = [\n"
        "    lambda: signatures['similar_movies'](titles=unknown, k=tf.constant(3)),\n"
        "    lambda: signatures['recommend_for_liked'](titles=unknown, k=tf.constant(3), include_rated=no),\n"
        "    lambda: signatures['similar_movies'](titles=known, k=tf.constant(12)),\n"
        "    lambda: signatures['recommend_for_liked'](titles=known, k=tf.constant(12), include_rated=no),\n"
        "]\n"
        "for question in questions * 5:  # the check must win every time, not race the lookup it guards\n"
        "    try:\n"
        "        question()\n"
        "        print('answered')\n"
        "    except tf.errors.InvalidArgumentError as error:\n"
        "        messages = ['a title is not in the catalogue (titles are exact)',\n"
        "                    'k is more than the movies in the catalogue']\n"
        "        failed = [message for message in messages if f'assertion failed: [{message}' in error.message]\n"
        "        print(failed[0] if len(failed) == 1 else error.message)\n"
    )
    completed = plain_tensorflow(program, target)
    assert completed.returncode == 0, completed.stderr
    unknown_title = "a title is not in the catalogue (titles are exact)"
    too_many = "k is more than the movies in the catalogue"
    assert completed.stdout.splitlines() == [unknown_title, unknown_title, too_many, too_many] * 5


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


def test_a_tuned_recommender_fits_new_viewers_to_its_own_loss_after_loading(tiny_tfds, tmp_path, capsys):
    # The tuned recipe trains on implicit ALS's loss, so a new viewer is fitted to it (least_squares_viewer);
    # the saved model must carry that choice and answer exactly as the freshly trained one did.
    target = str(tmp_path / "tuned")
    question = ["--liked", "alpha 1", "--liked", "alpha 2", "--k", "3", "--json"]
    trained = run(
        capsys, *question, "--tuned", "--epochs", "5", "--data-dir", tiny_tfds, "--save-dir", target
    )
    loaded = run(capsys, *question, "--load-dir", target)
    assert trained[0] == loaded[0] == 0
    assert loaded[1] == trained[1]
    saved_model = tf.saved_model.load(target)
    tuned_recipe = recipes.TUNED
    assert float(saved_model.fold_in_rated_weight) == tuned_recipe.rated_weight
    assert float(saved_model.fold_in_l2) == pytest.approx(tuned_recipe.embedding_l2)  # kept as float32
    assert float(saved_model.fold_in_l2_frequency_power) == tuned_recipe.l2_frequency_power
    # The L2 rule's movie rows (the tiny catalogue's 11 and the unknown title), and an unrated weight per
    # title that is not 1 for all: the training ratings' counts differ (3 for Alpha 5, 1 for Deja Vu).
    assert float(saved_model.fold_in_movie_table_rows) == 12
    assert len(set(saved_model.fold_in_unrated_weight.numpy().round(6))) == 3
    assert float(saved_model.fold_in_rated_titles_pull) == pytest.approx(tuned_recipe.rated_titles_pull)
