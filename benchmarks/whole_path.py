"""From MovieLens on disk to a trained model: the project's first run, its later runs, and implicit's ALS.

What a user waits for is the whole path, not training alone. This script times it three ways, side by
side in one run, on the same ratings and the same cores:

    1. the project's first run: `python recommend.py --tuned --timings`, with no numbers kept yet, so it
       parses TFDS's prepared files and keeps the numbers (beyond/ratings_cache.py)
    2. the project's later run: the same command, reading the kept numbers back
    3. implicit 0.7.3 (the library a user would pick instead, in a virtual environment of its own): the
       same ratings read from a CSV with pandas' read_csv, as a user of implicit would read MovieLens's
       ratings.csv, weighted as --tuned weighs them, then fitted for its default 15 iterations

Each is a fresh process, timed from outside (wall clock) and by its own account of loading and training.
The CSV is written once, beforehand, and not timed; it is as large as the real ratings.csv would be.

    python benchmarks/whole_path.py --dataset 25m --data-dir /tmp/synthetic-25m
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import recommend  # noqa: E402
from beyond import ratings_cache, recipes  # noqa: E402
from compare_with_implicit import IMPLICIT_REGULARIZATION, IMPLICIT_VERSION, implicit_python  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
# Read and fitted in implicit's own Python with the tuned recipe's settings, its L2 rule aside (argv: the CSV, then factors,
# regularization, iterations and rated_weight): each rating weighted 1 + (rated_weight - 1) x stars /
# average stars, as tuned.rating_weights weighs ratings that all have stars, as MovieLens's CSVs do.
IMPLICIT_PROGRAM = """
import sys, time
started = time.perf_counter()
import implicit, numpy as np, pandas, scipy.sparse
ratings = pandas.read_csv(sys.argv[1], dtype={"userId": np.int32, "movieId": np.int32, "rating": np.float32})
loaded = time.perf_counter()
stars = ratings["rating"].to_numpy()
factors, regularization, iterations, rated_weight = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
weights = 1 + (rated_weight - 1) * stars / stars.mean()
users, user_rows = np.unique(ratings["userId"].to_numpy(), return_inverse=True)
movies, movie_rows = np.unique(ratings["movieId"].to_numpy(), return_inverse=True)
matrix = scipy.sparse.csr_matrix((weights, (user_rows, movie_rows)), shape=(len(users), len(movies)), dtype=np.float32)
model = implicit.cpu.als.AlternatingLeastSquares(
    factors=factors, regularization=regularization, iterations=iterations, random_state=42
)
model.fit(matrix, show_progress=False)
done = time.perf_counter()
print(f"load {loaded - started:.1f}s, training {done - loaded:.1f}s")
"""

TUNED_SETTINGS = [
    str(value)
    for value in (
        recipes.TUNED.embedding_dim,
        IMPLICIT_REGULARIZATION,
        recipes.TUNED.epochs,
        recipes.TUNED.rated_weight,
    )
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="25m", choices=["1m", "20m", "25m"], help="default %(default)s")
    parser.add_argument("--data-dir", required=True, help="TensorFlow Datasets folder holding it")
    parser.add_argument(
        "--csv",
        type=pathlib.Path,
        help="where the ratings are written as CSV for implicit, once (default: beside the data, in csv/)",
    )
    parser.add_argument(
        "--implicit-venv",
        type=pathlib.Path,
        default=pathlib.Path.home() / ".cache" / "tfrs-movielens" / f"implicit-{IMPLICIT_VERSION}",
        help="implicit's virtual environment, made once (default %(default)s)",
    )
    args = parser.parse_args(argv)
    csv = args.csv or pathlib.Path(args.data_dir) / "csv" / f"ml-{args.dataset}-ratings.csv"
    python = implicit_python(args.implicit_venv)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "pandas"], check=True)
    if not csv.exists():
        write_csv(args.data_dir, args.dataset, csv)

    kept = ratings_cache.folder(args.data_dir, args.dataset)
    shutil.rmtree(kept, ignore_errors=True)
    command = [
        sys.executable,
        str(ROOT / "recommend.py"),
        "--dataset",
        args.dataset,
        "--data-dir",
        args.data_dir,
    ]
    command += ["--tuned", "--user", "1", "--timings"]
    rows = [
        ("recommend.py --tuned, first run (parses, keeps the numbers)", *timed(command)),
        ("recommend.py --tuned, later run (reads the numbers back)", *timed(command)),
        (
            f"implicit {IMPLICIT_VERSION}, pandas.read_csv then fit",
            *timed([str(python), "-c", IMPLICIT_PROGRAM, str(csv), *TUNED_SETTINGS]),
        ),
    ]
    print(
        f"MovieLens {args.dataset} in {args.data_dir}; {csv.stat().st_size / 2**20:,.0f} MB of CSV for implicit"
    )
    print("| | load | training | data on disk to a trained model (wall) |\n|---|---|---|---|")
    for name, wall, load, training in rows:
        print(f"| {name} | {load} | {training} | {wall:.1f} s |")
    return 0


def timed(command: list[str]) -> tuple[float, str, str]:
    """Runs COMMAND; its wall time, and the load and training times it reported."""
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{command[:2]} failed: {completed.stderr.strip().splitlines()[-1:]}")
    output = completed.stdout + completed.stderr
    recommend.progress(next((line for line in output.splitlines() if "load " in line), ""))
    load = re.search(r"load (\d+\.\d)s( \([^)]*\))?", output)
    training = re.search(r"training (\d+\.\d)s", output)
    return wall, f"{load.group(1)} s{load.group(2) or ''}", f"{training.group(1)} s"


def write_csv(data_dir: str, size: str, csv: pathlib.Path) -> None:
    """The ratings as MovieLens's ratings.csv lays them out: userId, movieId, rating, timestamp."""
    recommend.progress(f"Writing the ratings as CSV to {csv} (once)")
    data, _ = ratings_cache.load_movielens(data_dir, size)
    csv.parent.mkdir(parents=True, exist_ok=True)
    user_ids = data.users.astype(np.int64)[data.rating_users]
    partial = csv.with_name(csv.name + ".partial")
    with open(partial, "w") as file:
        file.write("userId,movieId,rating,timestamp\n")
        for first in range(0, data.num_ratings, 1_000_000):
            part = slice(first, first + 1_000_000)
            rows = np.column_stack([user_ids[part], data.rating_titles[part] + 1, data.rating_stars[part]])
            np.savetxt(file, np.column_stack([rows, np.full(len(rows), 1_000_000_000)]), fmt="%d,%d,%.1f,%d")
    os.replace(partial, csv)


if __name__ == "__main__":
    sys.exit(main())
