"""--tuned against implicit's ALS, side by side: the same ratings, weights, factors and cores.

`implicit` is the library a user would pick instead for implicit ALS on big data. It is a yardstick
only, never a requirement of recommend.py: this script installs it into a virtual environment of its own
(--implicit-venv) and fits it there, in benchmarks/implicit_als.py.

    1. read MovieLens (the real one, or what benchmarks/synthetic_movielens.py writes) as recommend.py does
    2. train the tuned recipe (alternating least squares in TensorFlow, stopping once converged), timed
    3. hand the same ratings and weights to implicit, and time its fit (15 iterations, its default)
    4. print both times, passes, and the loss each reached, computed the same way for both: implicit
       ALS's loss per rating without the L2 and with every unrated pair weighed 1, the loss implicit
       minimises (--tuned minimises its own, with its unrated weights: tuned.RowTerms)
    5. with --evaluate, both train on the tutorial's 80% split, and NDCG@10 and Recall@10 on the other
       20% are scored by beyond/evaluation.py for both and for most-popular

    python benchmarks/compare_with_implicit.py --dataset 25m --data-dir /tmp/synthetic-25m
    python benchmarks/compare_with_implicit.py --dataset 1m --data-dir /tmp/planted-1m --evaluate
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import recommend  # noqa: E402
from beyond import alternating_least_squares, download, evaluation, guards, recipes, tuned  # noqa: E402

IMPLICIT_VERSION = "0.7.3"
# implicit has one L2 for every row and weighs every unrated pair 1, so it cannot take --tuned's rule (an
# L2 that grows with each row's ratings, unrated pairs weighed by popularity). It gets the one L2 that did
# best on validation for that simpler loss, the tuned recipe's own before the rule (docs/tuned-recipe.md).
IMPLICIT_REGULARIZATION = 50.0
HERE = pathlib.Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    python = implicit_python(args.implicit_venv)
    # As recommend.py reads it: 1M and up parsed once, then read back (parsing 25M takes minutes).
    data, _ = download.load_movielens(args.data_dir, None, args.dataset)
    training, held_out = data, None
    if args.evaluate:
        train_rows, test_rows = evaluation.split_like_the_tutorial(data)
        training, held_out = evaluation.subset(data, train_rows), evaluation.subset(data, test_rows)
    vocabularies = recommend.build_vocabularies(data)
    recipe = recipes.TUNED
    recommend.tf.keras.utils.set_random_seed(args.seed)
    ours = recipe.build_model(*vocabularies, data.catalogue)
    passes = PassCounter()
    started = time.perf_counter()
    guards.run_training(ours, training, recipe, args.seed, [passes])
    our_seconds = time.perf_counter() - started

    weights = tuned.rating_weights(training, recipe)
    user_rows, movie_rows = alternating_least_squares.rating_rows(ours, training)
    theirs = recipe.build_model(*vocabularies, data.catalogue)
    tables = [tower.layers[-1].embeddings for tower in (theirs.user_model, theirs.movie_model)]
    recommend.progress(
        f"Fitting implicit {IMPLICIT_VERSION}'s ALS on the same {training.num_ratings:,} ratings"
    )
    fitted = fit_implicit(python, user_rows, movie_rows, weights, [t.shape[0] for t in tables], recipe, args)
    tables[0].assign(fitted["user_factors"])
    tables[1].assign(fitted["movie_factors"])

    rows = [
        ("--tuned (ALS in TensorFlow)", our_seconds, passes.count, ours),
        (
            f"implicit {fitted['version']} ALS",
            float(fitted["seconds"]),
            len(fitted["iteration_seconds"]),
            theirs,
        ),
    ]
    results = {}
    for name, seconds, count, model in rows:
        loss = loss_per_rating(model, user_rows, movie_rows, weights)
        results[name] = {
            "training_seconds": round(seconds, 1),
            "passes": count,
            "loss_per_rating": round(loss, 4),
        }
    if held_out is not None:
        most_popular = evaluation.build_most_popular_model(vocabularies[1], training)
        for name, _, _, model in rows + [("most popular", 0, 0, most_popular)]:
            # Only the ranking metrics: TFRS's top-k accuracy would take about half an hour a model on 25M.
            metrics = evaluation.catalogue_ranking_metrics(model, training, held_out)
            results.setdefault(name, {}).update(
                {key: round(float(value), 4) for key, value in metrics.items()}
            )
    print_results(results, args, training.num_ratings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", default="25m", choices=["100k", "1m", "20m", "25m"], help="default %(default)s"
    )
    parser.add_argument(
        "--data-dir", help="TensorFlow Datasets folder (default: TFDS_DATA_DIR or TFDS's own)"
    )
    parser.add_argument("--evaluate", action="store_true", help="train on 80%%, score on 20%% (default: off)")
    parser.add_argument(
        "--iterations", type=int, default=15, help="implicit's (default %(default)s, its own)"
    )
    parser.add_argument("--seed", type=int, default=42, help="default %(default)s")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--implicit-venv",
        type=pathlib.Path,
        default=pathlib.Path.home() / ".cache" / "tfrs-movielens" / f"implicit-{IMPLICIT_VERSION}",
        help="the virtual environment implicit is installed into, once (default %(default)s)",
    )
    return parser


class PassCounter(recommend.tf.keras.callbacks.Callback):
    count = 0

    def on_epoch_end(self, epoch, logs=None):
        self.count = epoch + 1


def implicit_python(venv: pathlib.Path) -> pathlib.Path:
    """The Python of VENV, with implicit installed in it: made the first time."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import implicit; assert implicit.__version__ == {IMPLICIT_VERSION!r}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    recommend.progress(f"Installing implicit {IMPLICIT_VERSION} into {venv} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = [str(python), "-m", "pip", "install", "-q", f"implicit=={IMPLICIT_VERSION}"]
    subprocess.run(install, check=True)
    return python


def fit_implicit(python, user_rows, movie_rows, weights, table_sizes, recipe, args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        ratings, factors = os.path.join(folder, "ratings.npz"), os.path.join(folder, "factors.npz")
        np.savez(
            ratings,
            user_rows=user_rows,
            movie_rows=movie_rows,
            weights=weights,
            num_users=table_sizes[0],
            num_movies=table_sizes[1],
        )
        command = [str(python), str(HERE / "implicit_als.py"), ratings, factors]
        command += ["--factors", str(recipe.embedding_dim), "--regularization", str(IMPLICIT_REGULARIZATION)]
        command += ["--iterations", str(args.iterations), "--seed", str(args.seed)]
        # implicit runs its own threads, one per core, and asks that BLAS not add threads inside them.
        subprocess.run(command, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        with np.load(factors) as fitted:
            return {name: fitted[name] for name in fitted.files}


def loss_per_rating(model, user_rows, movie_rows, weights, chunk: int = 1_000_000) -> float:
    """Implicit ALS's loss without the L2, per rating, for the model's two embedding tables: every user
    scored against every movie row, rated pairs weighted and unrated ones weighed 1, as implicit sums it."""
    users = model.user_model.layers[-1].embeddings.numpy().astype(np.float64)
    movies = model.movie_model.layers[-1].embeddings.numpy().astype(np.float64)
    total = float(np.sum((users @ (movies.T @ movies)) * users))
    for first in range(0, len(weights), chunk):
        part = slice(first, first + chunk)
        scores = np.einsum("ij,ij->i", users[user_rows[part]], movies[movie_rows[part]])
        total += float(np.sum(weights[part] * (1.0 - scores) ** 2 - scores**2))
    return total / len(weights)


def print_results(results: dict, args, num_ratings: int) -> None:
    if args.json:
        print(json.dumps(results, indent=2))
        return
    columns = ["training_seconds", "passes", "loss_per_rating"]
    if args.evaluate:
        columns += ["ndcg_at_10", "recall_at_10"]
    print(f"MovieLens {args.dataset} in {args.data_dir or 'TFDS_DATA_DIR'}: {num_ratings:,} training ratings")
    print(f"| | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for name, values in results.items():
        print(f"| {name} | {' | '.join(str(values.get(column, '')) for column in columns)} |")
    ours, theirs = list(results.values())[:2]
    print(f"--tuned took {ours['training_seconds'] / theirs['training_seconds']:.2f}x implicit's time")


if __name__ == "__main__":
    sys.exit(main())
