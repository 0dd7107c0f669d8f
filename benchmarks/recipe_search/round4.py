"""Stage 21 of docs/tuned-recipe.md: an L2 rule that holds from 100k to 25M, lambda (n + N)^0.5.

Stage 20's rule gives each row lambda = 0.0405 (n + N), N the other table's rows. On 100k that is about
72 for a user and 40 for a movie; on 25M's 162,541 users and 59,011 titles about 2,400 and 6,600, and the
planted 25M's vectors shrink until only popularity is left. With the power 0.5, lambda grows with the
square root of the sizes instead. This round scores the power 0.5 by its scale on 100k's validation folds,
as stage 20b scored its settings (the project's recipe and solver, seeds 1 and 2), beside stage 20's
point; and, with --planted, both rules on a validation fold of each planted set (the tutorial's split
again within its 80% training ratings; never its test 20%).

    1. stage 21 on 100k: the five folds of round 1, seeds 1 and 2, stage 20's point and the power 0.5
       by its scale
    2. the choice by round 1's rule (the best mean NDCG@10 keeping stage 17's Recall@10 and top_100); a
       tie within 0.0005 of stage 20's point is settled by the planted sets
    3. --planted DIR ...: both rules on a validation fold of each planted set (made by
       benchmarks/synthetic_movielens.py --taste 2), seed 1
    4. --test: the one look at 100k's test split, the chosen rule, seeds 1 to 3

    export TFDS_DATA_DIR=/path/to/tensorflow_datasets
    python benchmarks/recipe_search/round4.py --project . --results /tmp/recipe-search \\
        --planted /tmp/planted-1m /tmp/planted-25m --test

About 20 minutes on 100k (two cores), 2 for the planted 1M and 8 for the planted 25M. Results go to
RESULTS/round4/stage21.csv as each setting finishes, and a rerun skips what is there.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

import exact_als
import round3
from exact_als import progress

# Stage 20's point (l2_frequency_power 1, recipes.TUNED before stage 21), then the power 0.5 by its scale.
STAGE_20 = {"l2_frequency_power": 1.0, "embedding_l2": 0.0405}
SETTINGS = [STAGE_20] + [
    {"l2_frequency_power": 0.5, "embedding_l2": scale} for scale in (1.3, 1.44, 1.48, 1.52, 1.58, 1.7)
]
TIE = 0.0005


def kept(rows: list[dict]) -> list[dict]:
    """The rows that keep stage 17's validation Recall@10 and top_100 (round 1's rule)."""
    return [row for row in rows if all(float(row[name]) >= floor for name, floor in round3.TARGETS.items())]


def label(changes: dict) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in changes.items())


def planted_ndcg(data_dir: str, changes: dict) -> dict:
    """NDCG@10 and Recall@10 of the project's --tuned with CHANGES on a validation fold of a planted set:
    trained on the tutorial's 80% of its 80% training split, scored on the other 20% of it."""
    import recommend
    import tensorflow as tf
    from beyond import download, evaluation, guards, recipes

    size = "25m" if "25m" in data_dir else "1m"
    data, _ = download.load_movielens(data_dir, None, size)
    train_rows, _ = evaluation.split_like_the_tutorial(data)
    training = evaluation.subset(data, train_rows)
    fit_rows, check_rows = evaluation.split_like_the_tutorial(training)
    fitted, checked = evaluation.subset(training, fit_rows), evaluation.subset(training, check_rows)
    recipe = dataclasses.replace(recipes.TUNED, **changes)
    tf.keras.utils.set_random_seed(1)
    model = recipe.build_model(*recommend.build_vocabularies(data), data.catalogue)
    guards.run_training(model, fitted, recipe, 1)
    scores = evaluation.catalogue_ranking_metrics(model, fitted, checked)
    return {name: round(float(value), 4) for name, value in scores.items()}


def main(argv=None) -> int:
    parser = round3.search_parser(__doc__)
    parser.add_argument("--planted", nargs="*", default=[], help="planted sets' TFDS folders (default: none)")
    parser.add_argument("--test", action="store_true", help="then score the chosen rule on the test split")
    args = parser.parse_args(argv)
    progress("Loading MovieLens 100k and the tutorial's split")
    training, _, data, train_rows = exact_als.load_tutorial_split(args.project)
    folds = [
        (data, train_rows[f], training.take(f), training.take(h))
        for f, h in exact_als.fold_rows(len(training))
    ]
    results = pathlib.Path(args.results) / "round4"
    results.mkdir(parents=True, exist_ok=True)

    progress("Stage 21: the L2's power 0.5 by its scale, the project's recipe and solver, seeds 1 and 2")
    stage = round3.Results(results, "stage21")
    for changes in SETTINGS:
        stage.add(
            folds,
            label(changes),
            lambda: [round3.project_fits(changes, seed) for seed in round3.PROJECT_SEEDS],
        )
    round3.print_table("Stage 21: 100k's validation folds", stage.rows)
    stage_20 = next(row for row in stage.rows if row["setting"] == label(STAGE_20))
    power_half = max(
        (row for row in kept(stage.rows) if row["setting"].startswith("l2_frequency_power 0.5")),
        key=lambda row: float(row["ndcg"]),
    )
    gap = float(stage_20["ndcg"]) - float(power_half["ndcg"])
    verdict = "a tie, for the planted sets to settle" if abs(gap) <= TIE else "not a tie"
    print(f"\nThe power 0.5's best, {power_half['setting']}, is {gap:.5f} below stage 20's point: {verdict}")
    chosen = next(changes for changes in SETTINGS if label(changes) == power_half["setting"])
    for data_dir in args.planted:
        for changes in (STAGE_20, chosen):
            print(f"{data_dir}, {label(changes)}: " + json.dumps(planted_ndcg(data_dir, changes)), flush=True)
    if args.test:
        import recommend
        from beyond import evaluation, recipes

        runs = evaluation.evaluate(
            recommend.load_movielens(), dataclasses.replace(recipes.TUNED, **chosen), [1, 2, 3]
        )
        print(f"test split, {label(chosen)}: " + json.dumps(evaluation.spread(runs["two_tower"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
