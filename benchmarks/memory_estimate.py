"""Is the memory check honest? Each recipe's estimate beside the memory training really took.

The command line refuses, before training, sizes whose estimate (beyond/recipes.py, memory_bytes) is more
than the memory available. This script trains each configuration asked for in a fresh process and
reports, side by side:

    1. the estimate, for the data's numbers of users, movies and ratings
    2. what training took: the process's peak resident memory during training, less what it held just
       before (Linux's VmHWM, reset by writing 5 to /proc/self/clear_refs), so the loaded data and
       TensorFlow itself, which the check finds already taken, are not counted
    3. the ratio: above 1 and not several times it, or the estimate needs work

    python benchmarks/memory_estimate.py                                  # --tuned at 64, 1,024 and 8,192 on 100k
    python benchmarks/memory_estimate.py --recipe tutorial --dims 64 256
    python benchmarks/memory_estimate.py --dataset 25m --data-dir /tmp/synthetic-25m --dims 64

Linux only (it reads /proc/self/status). Needs MovieLens where TensorFlow Datasets finds it.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def measure(
    recipe_name: str, dataset: str, data_dir: str | None, embedding_dim: int, epochs: int | None
) -> dict:
    """Trains one configuration in this process; the estimate and the memory training took, in bytes."""
    sys.path.insert(0, ROOT)
    import recommend
    from beyond import big_data, download, guards, recipes

    tuned_recipe, optimizer = {
        "tutorial": (False, None),
        "tuned": (True, None),
        "tuned-adam": (True, "adam"),
    }[recipe_name]
    recipe = dataclasses.replace(recipes.choose(tuned_recipe, optimizer), embedding_dim=embedding_dim)
    if epochs:
        recipe = dataclasses.replace(recipe, epochs=epochs)
    data, _ = download.load_movielens(data_dir, None, dataset)
    vocabularies = recommend.build_vocabularies(data)
    recommend.tf.keras.utils.set_random_seed(42)
    before = memory_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM, the peak, starts again from what is resident now
    model = recipe.build_model(*vocabularies, data.catalogue)
    guards.run_training(model, data, recipe, seed=42)
    took = (memory_kib("VmHWM") - before) * 1024
    estimate = recipe.memory_bytes(big_data.sizes_of(data))
    return {
        "recipe": recipe_name,
        "dataset": dataset,
        "embedding_dim": embedding_dim,
        "estimate": estimate,
        "took": took,
        "before": before * 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipe", choices=["tutorial", "tuned", "tuned-adam"], default="tuned", help="default %(default)s"
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 1024, 8192], help="default %(default)s")
    parser.add_argument(
        "--dataset", default="100k", choices=["100k", "1m", "20m", "25m"], help="default %(default)s"
    )
    parser.add_argument("--data-dir", help="TensorFlow Datasets folder (default: TFDS_DATA_DIR)")
    parser.add_argument("--epochs", type=int, help="passes to train (default: the recipe's)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process's run
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.recipe, args.dataset, args.data_dir, args.dims[0], args.epochs)))
        return 0
    print(
        "| recipe | dataset | embedding_dim | estimate (GiB) | training took (GiB) | estimate / took | resident before (GiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for dim in args.dims:
        command = [sys.executable, __file__, "--one", "--recipe", args.recipe, "--dataset", args.dataset]
        command += ["--dims", str(dim)] + (["--data-dir", args.data_dir] if args.data_dir else [])
        command += ["--epochs", str(args.epochs)] if args.epochs else []
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode != 0:
            print(
                f"| {args.recipe} | {args.dataset} | {dim} | failed: {child.stderr.strip().splitlines()[-1]} |"
            )
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        gib = {key: result[key] / 2**30 for key in ("estimate", "took", "before")}
        print(
            f"| {args.recipe} | {args.dataset} | {dim:,} | {gib['estimate']:.2f} | {gib['took']:.2f} | "
            f"{result['estimate'] / max(result['took'], 1):.2f} | {gib['before']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
