"""Stage 20 of docs/tuned-recipe.md: each user's L2 pulls their vector towards their rated movies' mean.

Stage 18's recipe holds each user's vector near 0 with an L2 of lambda_u |x_u|^2. Stage 19 found that a
user tower which also reads the bag of the user's rated titles (x_u + the mean of a second table z over
them) gains 0.0017 on validation, but its user step couples every user who shares a title. This round
ties z to the movie table itself, taken as fixed within the user step, as alternating least squares
takes it anyway: the L2 becomes

    lambda_u |x_u - c m_u|^2,    m_u = the mean of the movie vectors y_j over the user's rated titles,

so each user's system is unchanged but for its right-hand side, sum w y + lambda_u c m_u. The movie step
is as before. The target moves with the movie table, so a pass no longer lowers one fixed objective;
every exact fit runs a fixed PASSES passes (validation moved by under 0.0003 between 10, 15 and 25).

    1. fit_with_prior: exact alternating least squares (exact_als.fit) with the pull, every row's
       system solved directly in the eigenbasis of the other side's Gram matrix
    2. stage 20a: the pull c by stage 18's lambda scale l2, fitted exactly (seed 1), on the five
       validation folds of round 1
    3. stage 20b: the pull's best region again, and the other levers beside it, trained by the project's
       own recipe and solver (recipes.TUNED with the setting changed, as --tuned trains it), seeds 1
       and 2 on every fold: with the pull, where the solver ends depends on where it starts (exact
       fits of seeds 1 to 3 spread by 0.001 on validation), so one seed cannot choose
    4. the choice, by round 1's rule (the best mean NDCG@10 keeping stage 17's Recall@10 and top_100)
       on stage 20b, and with --test, the one look at the test split: the project's --evaluate of the
       chosen recipe, seeds 1 to 3

    export TFDS_DATA_DIR=/path/to/tensorflow_datasets
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        python benchmarks/recipe_search/round3.py --project . --results /tmp/recipe-search --test

--project must be a commit whose recipes.TunedRecipe has rated_titles_pull. About 25 minutes on one
core; results go to RESULTS/round3/stage20a.csv and stage20b.csv as each setting finishes, and a rerun
skips what is there. Tables on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

import exact_als
from exact_als import Ratings, Setting, metrics, progress

PASSES = 15  # the recipe's most passes when the search ran (recipes.TUNED.epochs is 20 since)
# Stage 20's L2 rule, lambda (n + N)^1: recipes.TUNED's power is 0.5 since stage 21 (round4.py).
STAGE_20_RULE = {"l2_frequency_power": 1.0}
# Stage 18's chosen point; this round moves its l2 and adds the pull c.
STAGE_18 = Setting(l2=0.03744, nu=1.0, beta=0.1)
PULLS = [0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
L2_SCALES = [0.03744, 0.039, 0.0395, 0.04, 0.0405, 0.0415]
QUICK_PULLS, QUICK_L2_SCALES = [0.0, 0.7], [0.0395]
# Stage 20b: changes to recipes.TUNED, trained by the project. Stage 18's point; stage 20a's best region;
# then, at stage 20a's best, the stars' weight, the unrated weights' power and the dimension again.
PROJECT_SETTINGS = [
    {"rated_titles_pull": 0.0, "embedding_l2": 0.03744},
    *(
        {"rated_titles_pull": pull, "embedding_l2": l2}
        for pull, l2 in [
            (0.7, 0.0395), (0.8, 0.04), (0.8, 0.0405), (0.9, 0.04), (0.9, 0.0405), (0.9, 0.041),
            (1.0, 0.0405), (1.0, 0.041), (1.0, 0.042), (1.2, 0.041), (1.2, 0.042), (1.2, 0.043),
            (1.5, 0.043),
        ]
    ),
    *(
        {"rated_titles_pull": 0.7, "embedding_l2": 0.0395, **lever}
        for lever in [{"rated_weight": 5.0}, {"rated_weight": 7.0}, {"unrated_popularity_power": 0.2},
                      {"embedding_dim": 96}]
    ),
]  # fmt: skip
QUICK_PROJECT_SETTINGS = PROJECT_SETTINGS[:2]
PROJECT_SEEDS = (1, 2)
# Round 1's rule: stage 17's validation Recall@10 and top_100 must hold.
TARGETS = {"recall": 0.1971, "top_100": 0.4063}
FIELDS = ["setting", "ndcg", "ndcg_std", "recall", "recall_std", "top_100", "top_100_std", "folds_ndcg"]


# 1. The solver ------------------------------------------------------------------------------------------


def fit_with_prior(ratings: Ratings, setting: Setting, pull: float, seed: int = 1, passes: int = PASSES):
    """The user and movie tables after PASSES passes of exact_als.fit from Keras's initialisation, each
    user's L2 pulling towards PULL times the mean of their rated movies' vectors."""
    users, movies, _ = exact_als.fit(ratings, setting, seed, max_passes=passes, tolerance=0.0, pull=pull)
    return users, movies


# 2. Stage 20a: the exact solver ------------------------------------------------------------------------


def exact_fits(pull: float, l2: float):
    """A fit function for score(): SETTING's tables from the exact solver, seed 1."""
    setting = dataclasses.replace(STAGE_18, l2=l2)
    return lambda data, rows, fitted: fit_with_prior(fitted, setting, pull)


# 3. Stage 20b: the project's own recipe and solver ---------------------------------------------------------


def project_fits(changes: dict, seed: int):
    """A fit function for score(): the tables the project's --tuned trains, recipes.TUNED with CHANGES, on
    the fold's ratings, with SEED; as users x catalogue and catalogue x dim arrays in the script's order."""
    import recommend
    import tensorflow as tf
    from beyond import alternating_least_squares, evaluation, guards, recipes

    # At most 15 passes, as the search ran them: every fit converged by then.
    recipe = dataclasses.replace(recipes.TUNED, epochs=PASSES, **{**STAGE_20_RULE, **changes})

    def fit(data, rows, fitted):
        tf.keras.utils.set_random_seed(seed)
        model = recipe.build_model(*recommend.build_vocabularies(data), data.catalogue)
        guards.run_training(model, evaluation.subset(data, rows), recipe, seed)
        users = model.user_model.layers[-1].embeddings.numpy()
        movies = model.movie_model.layers[-1].embeddings.numpy()
        return (
            users[alternating_least_squares.embedding_rows(model.user_model, data.users)],
            movies[alternating_least_squares.embedding_rows(model.movie_model, data.catalogue)],
        )

    return fit


def score(folds, label: str, fits: list) -> dict:
    """Each fit function's tables on every fold, scored on its held-out fifth; means and spreads."""
    per_fold = [metrics(*fit(*fold[:2], fold[2]), fold[2], fold[3]) for fit in fits for fold in folds]
    row = {"setting": label}
    for name in ("ndcg", "recall", "top_100"):
        values = [fold[name] for fold in per_fold]
        row[name], row[f"{name}_std"] = round(np.mean(values), 5), round(np.std(values, ddof=1), 5)
    row["folds_ndcg"] = " ".join(f"{fold['ndcg']:.5f}" for fold in per_fold)
    return row


class Results:
    """A stage's rows, in RESULTS/round3/STAGE.csv, written as each setting finishes; a rerun skips them."""

    def __init__(self, results: pathlib.Path, stage: str):
        self.path = results / f"{stage}.csv"
        self.rows = list(csv.DictReader(open(self.path))) if self.path.exists() else []

    def add(self, folds, label: str, fits) -> None:
        if any(row["setting"] == label for row in self.rows):
            return
        started = time.perf_counter()
        self.rows.append(score(folds, label, fits()))
        progress(f"  {label}: NDCG@10 {self.rows[-1]['ndcg']} ({time.perf_counter() - started:.0f}s)")
        with open(self.path, "w", newline="") as file:
            writer = csv.DictWriter(file, FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n{'setting':<70}" + " ".join(f"{name:>11}" for name in FIELDS[1:-1]))
    for row in rows:
        print(f"{row['setting']:<70}" + " ".join(f"{float(row[name]):>11.5f}" for name in FIELDS[1:-1]))


# 4. The choice and the one look at the test split ------------------------------------------------------


def choose(rows: list[dict]) -> dict:
    kept = [row for row in rows if all(float(row[name]) >= floor for name, floor in TARGETS.items())]
    return max(kept, key=lambda row: float(row["ndcg"]))


def search_parser(description: str) -> argparse.ArgumentParser:
    """The options every round from this one on takes: the project to use and where results go."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--project", required=True, help="the repository whose loader, split and solver to use"
    )
    parser.add_argument("--results", default="results", help="where results go (default: %(default)s)")
    return parser


def main(argv=None) -> int:
    parser = search_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="two folds, two settings a stage: a smoke test")
    parser.add_argument("--test", action="store_true", help="then score the chosen recipe on the test split")
    args = parser.parse_args(argv)
    progress("Loading MovieLens 100k and the tutorial's split")
    training, _, data, train_rows = exact_als.load_tutorial_split(args.project)
    count = 2 if args.quick else exact_als.FOLDS
    folds = [
        (data, train_rows[f], training.take(f), training.take(h))
        for f, h in exact_als.fold_rows(len(training))[:count]
    ]
    results = pathlib.Path(args.results + ("-quick" if args.quick else "")) / "round3"
    results.mkdir(parents=True, exist_ok=True)

    progress("Stage 20a: the pull by the L2, fitted exactly")
    exact = Results(results, "stage20a")
    pulls, scales = (QUICK_PULLS, QUICK_L2_SCALES) if args.quick else (PULLS, L2_SCALES)
    for pull in pulls:
        for l2 in scales:
            exact.add(folds, f"pull {pull:g}, l2 {l2:g}", lambda: [exact_fits(pull, l2)])
    print_table("Stage 20a: the exact solver, seed 1", exact.rows)

    progress("Stage 20b: the project's recipe and solver, seeds " + ", ".join(map(str, PROJECT_SEEDS)))
    project = Results(results, "stage20b")
    for changes in QUICK_PROJECT_SETTINGS if args.quick else PROJECT_SETTINGS:
        label = ", ".join(f"{name} {value:g}" for name, value in changes.items())
        project.add(folds, label, lambda: [project_fits(changes, seed) for seed in PROJECT_SEEDS])
    print_table("Stage 20b: the project's solver", project.rows)
    chosen = choose(project.rows)
    print_table("The chosen recipe (round 1's rule, on stage 20b)", [chosen])
    (results / "chosen.json").write_text(json.dumps(chosen, indent=1))
    if args.test:
        import recommend
        from beyond import evaluation, recipes

        changes = next(
            changes
            for changes in PROJECT_SETTINGS
            if ", ".join(f"{name} {value:g}" for name, value in changes.items()) == chosen["setting"]
        )
        looks = {}
        for label, recipe in (("stage 18", PROJECT_SETTINGS[0]), ("chosen", changes)):
            runs = evaluation.evaluate(
                recommend.load_movielens(),
                dataclasses.replace(recipes.TUNED, **{**STAGE_20_RULE, **recipe}),
                [1, 2, 3],
            )
            looks[label] = evaluation.spread(runs["two_tower"])
            print(f"{label}: " + json.dumps(looks[label]), flush=True)
        (results / "test_split.json").write_text(json.dumps(looks, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
