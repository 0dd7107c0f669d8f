"""Fits implicit's ALS to ratings that benchmarks/compare_with_implicit.py hands over; run in a Python of
its own that has `implicit` (that script makes one), since implicit is no requirement of this project.

    python benchmarks/implicit_als.py RATINGS.npz FACTORS.npz --factors 64 --regularization 50 \\
        --iterations 15 --seed 42

RATINGS.npz holds user_rows, movie_rows and weights (one per rating) and the table sizes; FACTORS.npz
receives user_factors, movie_factors, the seconds the fit took and the seconds each iteration took.
"""

import argparse
import time

import implicit
import numpy as np
import scipy.sparse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ratings")
    parser.add_argument("factors_out")
    parser.add_argument("--factors", type=int, required=True)
    parser.add_argument("--regularization", type=float, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    ratings = np.load(args.ratings)
    shape = (int(ratings["num_users"]), int(ratings["num_movies"]))
    started = time.perf_counter()
    # implicit takes each stored value as the rating's confidence, 1 for every pair not stored: the
    # weights of implicit ALS's loss as beyond/tuned.py defines it.
    user_items = scipy.sparse.csr_matrix(
        (ratings["weights"], (ratings["user_rows"], ratings["movie_rows"])), shape=shape, dtype=np.float32
    )
    iteration_seconds = []
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=args.factors,
        regularization=args.regularization,
        iterations=args.iterations,
        random_state=args.seed,
    )
    model.fit(
        user_items,
        show_progress=False,
        callback=lambda iteration, seconds, loss: iteration_seconds.append(seconds),
    )
    seconds = time.perf_counter() - started
    np.savez(
        args.factors_out,
        user_factors=model.user_factors,
        movie_factors=model.item_factors,
        seconds=seconds,
        iteration_seconds=np.array(iteration_seconds),
        version=implicit.__version__,
    )


if __name__ == "__main__":
    main()
