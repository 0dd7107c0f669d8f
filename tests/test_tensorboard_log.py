"""--tensorboard: the loss curve and the movie map, read back with TensorBoard's own readers."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import data_provider, event_accumulator, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.projector import projector_plugin

from beyond import tensorboard_log
from conftest import MOVIE_TITLES, tiny_ratings
from test_cli import assert_one_line_error, run
from test_serving import snapshot

TINY_TRAINING = ["--epochs", "4", "--embedding-dim", "8", "--batch-size", "64"]


def scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a folder of event files, as TensorBoard reads it: {tag: [(step, value)]}."""
    events = event_accumulator.EventAccumulator(folder)
    events.Reload()
    return {
        tag: [(event.step, float(tf.make_ndarray(event.tensor_proto))) for event in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
    }


def projector_configs(logdir: str) -> dict:
    """The projector's configs by run, found as TensorBoard's projector plugin finds them for its page."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    plugin = projector_plugin.ProjectorPlugin(base_plugin.TBContext(logdir=logdir, data_provider=provider))
    plugin._update_configs()
    return plugin._configs


def only_run(root) -> str:
    (name,) = os.listdir(root)
    return os.path.join(root, name)


def test_the_log_holds_the_loss_per_epoch_and_a_map_of_every_movie(tiny_tfds, tmp_path, capsys):
    logs = tmp_path / "logs"
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, *TINY_TRAINING, "--tensorboard", str(logs)
    )
    assert status == 0 and out.startswith("Top 3 movies for user 1")
    run_folder = only_run(logs)
    assert re.fullmatch(r"\d{8}-\d{6}-tutorial-seed42", os.path.basename(run_folder))
    assert f"TensorBoard log in {run_folder}; to see it: tensorboard --logdir {logs}" in err

    # One loss point per epoch, the same mean per rating that the progress lines print.
    printed = [float(loss) for loss in re.findall(r"loss (\d+\.\d+) per rating", err)]
    curve = scalars(os.path.join(run_folder, "train"))["epoch_loss"]
    assert [step for step, _ in curve] == [0, 1, 2, 3]
    assert [round(value, 3) for _, value in curve] == printed

    # TensorBoard's projector, given the whole log folder as `tensorboard --logdir` gives it, finds one map:
    # a checkpointed table with one row per title, and a metadata file that describes each row.
    configs = projector_configs(str(logs))
    assert list(configs) == [f"{os.path.basename(run_folder)}/train"]
    (embedding,) = configs[f"{os.path.basename(run_folder)}/train"].embeddings
    assert embedding.metadata_path == "metadata.tsv"
    table = tf.train.load_checkpoint(os.path.join(run_folder, "train")).get_tensor(embedding.tensor_name)
    catalogue = sorted(set(MOVIE_TITLES))
    assert table.shape == (len(catalogue), 8)
    with open(os.path.join(run_folder, "train", embedding.metadata_path), encoding="utf-8") as metadata:
        header, *rows = metadata.read().splitlines()
    assert header.split("\t") == ["title", "year", "genres", "first_genre", "ratings"]
    assert len(rows) == len(catalogue) == 11
    by_title = {row.split("\t")[0]: row.split("\t") for row in rows}
    assert [row.split("\t")[0] for row in rows] == catalogue  # row i describes table row i
    ratings = {title: sum(rated == title for _, rated in tiny_ratings()) for title in catalogue}
    assert {title: int(row[4]) for title, row in by_title.items()} == ratings
    assert by_title["Alpha 5 (2001)"][1] == "2001" and by_title["Alpha 5 (2001)"][4] == "3"


def test_each_run_gets_its_own_folder_and_leaves_the_others_alone(tiny_tfds, tmp_path, capsys):
    logs = tmp_path / "logs"
    common = ["--user", "1", "--k", "3", "--data-dir", tiny_tfds, *TINY_TRAINING, "--tensorboard", str(logs)]
    assert run(capsys, *common)[0] == 0
    first = only_run(logs)
    before = snapshot(first)
    assert run(capsys, *common, "--tuned", "--epochs", "2")[0] == 0
    second = [os.path.join(logs, name) for name in os.listdir(logs) if os.path.join(logs, name) != first]
    assert len(second) == 1 and "-tuned-seed42" in second[0]
    assert snapshot(first) == before
    assert len(scalars(os.path.join(second[0], "train"))["epoch_loss"]) == 2


def test_a_folder_holding_anything_else_is_refused_and_left_alone(tiny_tfds, tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "notes.txt").write_text("precious")
    status, out, err = run(capsys, "--user", "1", "--data-dir", tiny_tfds, "--tensorboard", str(folder))
    assert_one_line_error(status, out, err, "holds files that are not TensorBoard logs", "notes.txt")
    assert snapshot(folder) == {os.path.join("train", "notes.txt"): b"precious"}


def test_a_file_is_refused_and_so_is_tensorboard_with_load_dir(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(
        *run(capsys, "--evaluate", "--tensorboard", str(tmp_path / "file")), "is a file, not a folder"
    )
    assert_one_line_error(
        *run(capsys, "--user", "1", "--load-dir", str(tmp_path), "--tensorboard", str(tmp_path / "logs")),
        "--load-dir trains nothing",
    )
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_a_folder_that_cannot_be_made_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    status, out, err = run(capsys, "--user", "1", "--tensorboard", str(tmp_path / "file" / "logs"))
    assert_one_line_error(status, out, err, "cannot be created", "Not a directory")


def test_a_log_that_cannot_be_written_ends_in_a_clear_message(tiny_tfds, tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tensorboard_log.projector, "visualize_embeddings", disk_full)
    status, out, err = run(
        capsys, "--user", "1", "--k", "3", "--data-dir", tiny_tfds, *TINY_TRAINING,
        "--tensorboard", str(tmp_path / "logs"),
    )  # fmt: skip
    assert status == 1
    assert out.startswith("Top 3 movies for user 1")  # answered before the log was finished
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"recommend\.py: could not write the TensorBoard log in .*: No space left on device", last
    )
    assert "Traceback" not in err


def test_save_dir_and_tensorboard_inside_each_other_are_refused(tmp_path, capsys):
    for save_dir, logs in [(tmp_path / "m", tmp_path / "m" / "logs"), (tmp_path / "l" / "m", tmp_path / "l")]:
        status, out, err = run(capsys, "--user", "1", "--save-dir", str(save_dir), "--tensorboard", str(logs))
        assert_one_line_error(status, out, err, "must not be inside each other")
    assert os.listdir(tmp_path) == []


def test_a_path_that_is_not_utf8_is_refused(tmp_path, capsys):
    folder = os.path.join(os.fsencode(tmp_path), b"logs\xff").decode(errors="surrogateescape")
    assert_one_line_error(*run(capsys, "--user", "1", "--tensorboard", folder), "is not a UTF-8 path")


def test_the_metadata_copes_with_unusual_titles_and_missing_genres(tmp_path):
    catalogue = np.array([b"Known (2000)", b"No Year Here", b"Tab\there (1999)"], dtype=object)
    genres = {b"Known (2000)": ["Drama", "Comedy"], b"Tab\there (1999)": []}
    log = tensorboard_log.TensorBoardLog(str(tmp_path), "tutorial", genres)
    log.write_projector(str(tmp_path / "run"), tf.eye(3), catalogue, np.array([2, 1, 0]))
    assert (tmp_path / "run" / "train" / "metadata.tsv").read_text(encoding="utf-8").splitlines() == [
        "title\tyear\tgenres\tfirst_genre\tratings",
        "Known (2000)\t2000\tDrama|Comedy\tDrama\t2",
        "No Year Here\t\t(none)\t(none)\t1",
        "Tab here (1999)\t1999\t(none)\t(none)\t0",
    ]
    tensorboard_log.check_tensorboard_dir(str(tmp_path))  # what it wrote counts as TensorBoard logs


def test_held_out_metrics_are_logged_at_the_epoch_training_converged_in(tiny_tfds, tmp_path, capsys):
    logs = tmp_path / "logs"
    # One number a vector, for the tiny data to converge within 15 passes (see test_cli.tuned_run).
    argv = ["--evaluate", "--tuned", "--embedding-dim", "1", "--json", "--data-dir", tiny_tfds]
    argv += ["--tensorboard", str(logs)]
    status, _, err = run(capsys, *argv)
    assert status == 0
    converged = re.search(r"converged in epoch (\d+) of at most 20", err)
    assert converged and int(converged.group(1)) < 15
    (run_folder,) = os.listdir(logs)
    curve = scalars(os.path.join(logs, run_folder, "train"))["epoch_loss"]
    held_out = scalars(os.path.join(logs, run_folder, "evaluation"))["two_tower/ndcg_at_10"]
    assert [step for step, _ in curve] == list(range(int(converged.group(1))))
    assert [step for step, _ in held_out] == [curve[-1][0]]  # beside the loss curve's last point


@pytest.mark.usefixtures("real_movielens")
def test_evaluate_logs_the_held_out_metrics_of_each_seed(tmp_path, capsys):
    logs = tmp_path / "logs"
    argv = ["--evaluate", "--epochs", "1", "--repeat", "2", "--json", "--tensorboard", str(logs)]
    status, out, _ = run(capsys, *argv)
    assert status == 0
    results = json.loads(out)
    runs = sorted(os.listdir(logs))
    assert [name[-6:] for name in runs] == ["seed42", "seed43"]
    logged = [scalars(os.path.join(logs, name, "evaluation")) for name in runs]
    for metric in results["two_tower"]:
        for model in ("two_tower", "most_popular"):
            values = [metrics[f"{model}/{metric}"] for metrics in logged]
            assert all(len(points) == 1 and points[0][0] == 0 for points in values)  # at the last epoch
            mean = np.mean([points[0][1] for points in values])
            assert mean == pytest.approx(results[model][metric]["mean"], abs=1e-4)
    header, *rows = (logs / runs[0] / "train" / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1664
    star_wars = next(row.split("\t") for row in rows if row.startswith("Star Wars (1977)\t"))
    assert star_wars[1] == "1977" and "Sci-Fi" in star_wars[2].split("|")
    assert int(star_wars[4]) > 300  # its ratings among the 80,000 trained on
