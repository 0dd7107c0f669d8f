"""The command line: every option beyond the tutorial, and one clear message for every failure.

recommend.py's main() hands its arguments here. This module:

    1. parses them (argparse, with types and defaults in --help), refusing a mistake in one line
    2. checks what was asked against the data before any training (an unknown user, a k too large)
    3. runs the core's six steps for --user, adding only what an option asks for (saving, TensorBoard,
       tf.distribute), or answers from a saved model (--load-dir), or evaluates (--evaluate)
    4. prints the answer on stdout, as a table or JSON; progress goes to stderr
    5. turns every failure into one message and an exit status: 2 for a usage error, 1 for a failure,
       130 for Ctrl-C, 141 for a closed pipe

    python recommend.py --user 42 --tuned --timings
    python recommend.py --liked "star wars" --liked fargo --json
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shlex
import sys
import time
import urllib.parse

import tensorflow as tf
from absl import logging as absl_logging

import recommend
from beyond import big_data, distribute, download, evaluation, guards, movie_space, serving, tensorboard_log, tuned
from beyond.guards import DataUnavailableError, SaveFailed, TrainingDiverged, UsageError

DEFAULT_SEED = 42


def whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if maximum is None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    if maximum is not None and not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, minimum=1)


def seed_number(text: str) -> int:
    return whole_number(text, minimum=0, maximum=2**32 - 1)  # what numpy's and TensorFlow's seeds accept


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def download_address(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// address, got {text!r}")
    return text


# The options that override a field of the recipe: (flag, type, Recipe field, metavar, help).
RECIPE_OPTIONS = [
    ("--epochs", positive_int, "epochs", "N", "passes over the ratings"),
    ("--embedding-dim", positive_int, "embedding_dim", "N", "numbers per user and per movie embedding"),
    (
        "--learning-rate",
        positive_float,
        "learning_rate",
        "RATE",
        "learning rate (Adagrad's; Adam's with --tuned)",
    ),
    ("--batch-size", positive_int, "batch_size", "N", "ratings per training step"),
]


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # One line instead of argparse's usage block: the message is what the user needs to read.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="recommend.py",
        description="Train the TensorFlow Recommenders two-tower model on MovieLens; recommend movies.",
        allow_abbrev=False,
    )
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument(
        "--user",
        metavar="ID",
        help="the MovieLens user id to recommend for, e.g. 42 (or give --similar-to, --liked or --evaluate)",
    )
    task.add_argument(
        "--similar-to",
        metavar="TITLE",
        help="list the movies most similar to this one: the cosine of their movie embeddings, since a "
        "vector's length mostly reflects popularity and its direction who watches it. TITLE is the exact "
        "title, or a part of exactly one in any case and without accents, e.g. 'star wars' or 'miserables'",
    )
    task.add_argument(
        "--liked",
        metavar="TITLE",
        action="append",
        help="recommend for a new viewer who liked this movie; repeat it for each film (matched as for "
        "--similar-to). The named films are left out unless --include-rated",
    )
    task.add_argument(
        "--evaluate",
        action="store_true",
        help="train on the tutorial's 80%% split and compare with recommending the most popular movies "
        "(default: off)",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        metavar="N",
        help="with --evaluate: train N times, with seeds --seed to --seed+N-1, and report each metric's mean "
        "and sample standard deviation (default: once, plain numbers)",
    )
    parser.add_argument(
        "--k",
        type=positive_int,
        default=10,
        metavar="N",
        help="how many movies to recommend (default: %(default)s)",
    )
    parser.add_argument(
        "--include-rated",
        action="store_true",
        help="also recommend movies the user has already rated, or the --liked films (default: leave them out)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of a table (default: off)"
    )
    training = parser.add_argument_group("training (ignored with --load-dir, which reuses a trained model)")
    training.add_argument(
        "--tuned",
        action="store_true",
        help="train with the tuned recipe instead of the tutorial's (default: off)",
    )
    for flag, parse, name, metavar, meaning in RECIPE_OPTIONS:
        tutorial, tuned_value = getattr(recommend.TUTORIAL, name), getattr(tuned.TUNED, name)
        default = f"{tutorial:g}" + (f"; {tuned_value:g} with --tuned" if tuned_value != tutorial else "")
        training.add_argument(flag, type=parse, metavar=metavar, help=f"{meaning} (default: {default})")
    training.add_argument(
        "--seed",
        type=seed_number,
        default=DEFAULT_SEED,
        metavar="N",
        help="seeds every random choice (default: %(default)s)",
    )
    parser.add_argument(
        "--dataset",
        choices=("100k", "1m", "20m", "25m"),
        default="100k",
        help="which MovieLens: 100k ratings (the tutorial's), 1m, 20m or 25m; ignored with --load-dir "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--distribute",
        choices=("none", "mirrored", "multi-worker"),
        default="none",
        help="train with a tf.distribute strategy: mirrored copies the model to every local GPU (or every "
        "logical CPU device when there is none) and splits each batch between them; multi-worker does so "
        "across the machines the TF_CONFIG environment variable names, and only worker 0 prints, logs and "
        "saves (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="TensorFlow Datasets folder holding (or to receive) MovieLens; ignored with --load-dir "
        "(default: TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--download-url",
        type=download_address,
        metavar="URL",
        help="fetch the MovieLens archive from this mirror (http or https) instead of GroupLens; it is "
        "accepted only if its SHA-256 is the one TensorFlow Datasets registered (default: GroupLens)",
    )
    saving = parser.add_mutually_exclusive_group()
    saving.add_argument(
        "--save-dir",
        metavar="DIR",
        help="after training, save the recommender here as a SavedModel (default: not saved)",
    )
    saving.add_argument(
        "--load-dir",
        metavar="DIR",
        help="answer from a recommender saved with --save-dir: no data, no training (default: train one)",
    )
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write a TensorBoard log of each model trained: the loss per epoch, held-out metrics with "
        "--evaluate, and the movie embeddings for the projector, in a new run folder under DIR; then run "
        "`tensorboard --logdir DIR` (default: no log)",
    )
    parser.add_argument(
        "--timings", action="store_true", help="print how long each phase took, on stderr (default: off)"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full Python trace of an unexpected error instead of a one-line summary (default: off)",
    )
    return parser


def recipe_from(args: argparse.Namespace) -> recommend.Recipe:
    """The tutorial's or the tuned recipe, with whatever the command line set explicitly."""
    base = tuned.TUNED if args.tuned else recommend.TUTORIAL
    overrides = {
        name: getattr(args, name) for _, _, name, _, _ in RECIPE_OPTIONS if getattr(args, name) is not None
    }
    return dataclasses.replace(base, **overrides)


def describe_ids(ids) -> str:
    """Sums up ids for an error message: "1-943" for a run of numbers, otherwise the first few."""
    ids = [str(user_id) for user_id in ids]
    if all(user_id.isdigit() for user_id in ids):
        runs = []  # [first, last] of each run of consecutive numbers
        for number in sorted(int(user_id) for user_id in ids):
            if runs and number == runs[-1][1] + 1:
                runs[-1][1] = number
            else:
                runs.append([number, number])
        parts = [f"{first}-{last}" if first != last else f"{first}" for first, last in runs]
    else:
        parts = sorted(ids)
    return ", ".join(parts[:5]) + (", ..." if len(parts) > 5 else "")


def check_request(
    user_id: str, k: int, include_rated: bool, rated_counts: dict[str, int], catalogue_size: int
) -> None:
    """Refuses an unknown user or a k larger than what can be recommended to them."""
    if user_id not in rated_counts:
        raise UsageError(f"user {user_id!r} is not in the data; user ids are {describe_ids(rated_counts)}")
    if include_rated and k > catalogue_size:
        raise UsageError(f"--k {k} is more than the {catalogue_size} movies in the catalogue")
    unrated = catalogue_size - rated_counts[user_id]
    if not include_rated and k > unrated:
        raise UsageError(
            f"--k {k} is more than the {unrated} movies user {user_id} has not rated "
            f"(they rated {rated_counts[user_id]} of {catalogue_size}; "
            f"--include-rated allows up to {catalogue_size})"
        )


class Stopwatch:
    """Times the phases of a run, for --timings."""

    def __init__(self):
        self.phases = {"import": recommend.IMPORTED_AT - recommend.STARTED_AT}
        self.lap_started_at = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.lap_started_at
        self.lap_started_at = now

    def report(self) -> str:
        parts = [f"{phase} {seconds:.1f}s" for phase, seconds in self.phases.items()]
        report = "timings: " + ", ".join(parts) + f", total {sum(self.phases.values()):.1f}s"
        try:
            import resource  # Unix only
        except ImportError:
            return report
        # The most memory this process has held at once. Linux counts it in KiB, macOS in bytes.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return report + f"; peak memory {peak / 2**30:.2f} GiB"


def print_ranking(heading: str, items: list[dict], document: dict, as_json: bool) -> None:
    """Prints a ranked list of movies as a table under a heading, or DOCUMENT as one line of JSON."""
    if as_json:
        print(json.dumps(document, ensure_ascii=False))
        return
    print(heading)
    width = max(len("title"), *(len(item["title"]) for item in items))
    print(f"{'rank':>4}  {'title':<{width}}  {'score':>5}")
    for item in items:
        print(f"{item['rank']:>4}  {item['title']:<{width}}  {item['score']:>5.2f}")


def print_evaluation(results: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(results))
        return
    split = results["split"]
    print(f"Held-out evaluation: trained on {split['train']:,} ratings, tested on {split['test']:,}")
    if "repeat" in results:
        seeds = results["seeds"]
        print(f"Mean ± standard deviation over {results['repeat']} runs, seeds {seeds[0]} to {seeds[-1]}")

    def cell(value) -> str:
        return f"{value['mean']:.4f} ± {value['std']:.4f}" if isinstance(value, dict) else f"{value:.4f}"

    width = max(len("most_popular"), *(len(cell(value)) for value in results["two_tower"].values()))
    print(f"{'metric':<14}{'two_tower':>{width}}  {'most_popular':>{width}}")
    for metric in results["two_tower"]:
        two_tower, most_popular = cell(results["two_tower"][metric]), cell(results["most_popular"][metric])
        print(f"{metric:<14}{two_tower:>{width}}  {most_popular:>{width}}")


def check_data_dir(directory: str | None) -> None:
    if directory is not None and (
        not directory or (os.path.exists(directory) and not os.path.isdir(directory))
    ):
        raise UsageError(f"--data-dir {directory!r} is not a folder")


def check_question(
    args: argparse.Namespace, catalogue_size: int, rated_counts: dict[str, int], titles: list[str] | None
) -> dict:
    """Checks what was asked against the data before any training, and names the movies it means.
    TITLES, the catalogue as text, is needed only for --similar-to and --liked.

    Returns {"user": id}, {"similar_to": title} or {"liked": [titles]}, with every title exact."""
    size = catalogue_size
    if args.user is not None:
        check_request(args.user, args.k, args.include_rated, rated_counts, size)
        return {"user": args.user}
    if args.similar_to is not None:
        if args.include_rated:
            recommend.progress(
                "note: --include-rated ignored: --similar-to never lists the movie itself, and nothing else"
            )
        title = movie_space.match_title(args.similar_to, titles)
        if args.k > size - 1:
            raise UsageError(f"--k {args.k} is more than the {size - 1} other movies in the catalogue")
        return {"similar_to": title}
    liked = []
    for text in args.liked:
        title = movie_space.match_title(text, titles)
        if title in liked:
            recommend.progress(f"note: {title!r} was named more than once; it counts once")
        else:
            liked.append(title)
    left = size if args.include_rated else size - len(liked)
    if args.k > left:
        raise UsageError(f"--k {args.k} is more than the {left} movies left to recommend")
    return {"liked": liked}


def answer(question: dict, args: argparse.Namespace, index=None, data=None, recommender=None) -> None:
    """Asks the checked question and prints the answer. A user's top k comes from the core's index and
    data after training, or from a loaded RECOMMENDER; --similar-to and --liked ask a Recommender."""
    if "user" in question:
        user_id = question["user"]
        if recommender is None:
            items = recommend.recommend(index, data, user_id, args.k, args.include_rated)
        else:
            items = serving.recommend_from(recommender, user_id, args.k, args.include_rated)
        which = "" if args.include_rated else ", leaving out movies they have rated"
        heading = f"Top {len(items)} movies for user {user_id}{which}:"
        document = {"user": user_id, "recommendations": items}
    elif "similar_to" in question:
        title = question["similar_to"]
        items = movie_space.similar_movies(recommender, title, args.k)
        heading = f"The {len(items)} movies most similar to {title} (cosine of their embeddings):"
        document = {"title": title, "similar": items}
    else:
        liked = question["liked"]
        items = movie_space.recommend_for_liked(recommender, liked, args.k, args.include_rated)
        names = liked[0] if len(liked) == 1 else ", ".join(liked[:-1]) + " and " + liked[-1]
        which = "" if args.include_rated else f", leaving {'it' if len(liked) == 1 else 'those'} out"
        heading = f"Top {len(items)} movies for a viewer who liked {names}{which}:"
        document = {"liked": liked, "recommendations": items}
    print_ranking(heading, items, document, args.json)


def run_recommend(args: argparse.Namespace, stopwatch: Stopwatch, strategy: tf.distribute.Strategy) -> None:
    """The core's six steps, with the checks, logs and saving that the options ask for."""
    check_data_dir(args.data_dir)
    if args.save_dir is not None:
        serving.check_save_dir(args.save_dir)
    if args.tensorboard is not None:
        tensorboard_log.check_tensorboard_dir(args.tensorboard)
    if args.save_dir and args.tensorboard and nested(args.save_dir, args.tensorboard):
        raise UsageError(
            "--save-dir and --tensorboard must not be inside each other: each folder holds only its own files"
        )
    recipe = recipe_from(args)
    data = download.load_movielens(args.data_dir, args.download_url, args.dataset)  # 1
    log = tensorboard_log_for(args) if distribute.is_chief(strategy) else None
    rated_counts = big_data.rated_titles_per_user(data)
    catalogue_size = len(data.catalogue)
    titles = [title.decode("utf-8") for title in data.catalogue]
    question = check_question(args, catalogue_size, rated_counts, titles)
    stopwatch.lap("load")

    # One seed for Python, numpy and TensorFlow: the embeddings' starting values and the shuffling. On a
    # CPU that is enough for identical answers run after run (docs/speed.md: op determinism cost 50% more).
    big_data.check_memory(recipe, len(rated_counts), catalogue_size)
    tf.keras.utils.set_random_seed(args.seed)
    user_ids_vocabulary, movie_titles_vocabulary = recommend.build_vocabularies(data)  # 2
    stopwatch.lap("vocabularies")

    run = log.new_run(args.seed) if log else None
    callbacks = (log.callback(run),) if log else ()
    with strategy.scope():
        model = tuned.build_model(user_ids_vocabulary, movie_titles_vocabulary, data.catalogue, recipe)  # 3
        guards.train(model, data, recipe, args.seed, callbacks)  # 4
    stopwatch.lap("training")

    index = recommend.build_index(model, data)  # 5
    needs_recommender = args.save_dir is not None or "user" not in question
    recommender = None
    if needs_recommender:
        recommender = serving.build_recommender(model, index, data, movie_space.fold_in_l2_for(recipe))
    stopwatch.lap("indexing")

    answer(question, args, index, data, None if "user" in question else recommender)  # 6
    stopwatch.lap("query")

    if log:
        log.write_projector(run, model.movie_model(data.catalogue), data.catalogue, big_data.ratings_per_title(data))
        recommend.progress(
            f"TensorBoard log in {run}; to see it: tensorboard --logdir {shlex.quote(args.tensorboard)}"
        )

    if args.save_dir is not None and distribute.is_chief(strategy):
        details = {
            "dataset": data.size,
            "catalogue_size": catalogue_size,
            "rated_counts": rated_counts,
            "training": {"recipe": "tuned" if args.tuned else "tutorial", "seed": args.seed, **dataclasses.asdict(recipe)},
        }
        serving.save_recommender(recommender, details, args.save_dir)
        recommend.progress(f"Saved the recommender to {args.save_dir}")
        stopwatch.lap("saving")


def tensorboard_log_for(args: argparse.Namespace) -> "tensorboard_log.TensorBoardLog | None":
    if args.tensorboard is None:
        return None
    genres = tensorboard_log.read_movie_genres(args.data_dir, args.dataset)
    return tensorboard_log.TensorBoardLog(args.tensorboard, "tuned" if args.tuned else "tutorial", genres)


def nested(first: str, second: str) -> bool:
    """True when one folder is, or is inside, the other."""
    first, second = os.path.realpath(first), os.path.realpath(second)
    return os.path.commonpath([first, second]) in (first, second)


def run_load(args: argparse.Namespace, stopwatch: Stopwatch) -> None:
    if args.tensorboard is not None:
        raise UsageError("--tensorboard logs training, and --load-dir trains nothing")
    given = {flag: getattr(args, name) is not None for flag, _, name, _, _ in RECIPE_OPTIONS}
    given.update(
        {
            "--seed": args.seed != DEFAULT_SEED,
            "--data-dir": args.data_dir is not None,
            "--dataset": args.dataset != "100k",
            "--distribute": args.distribute != "none",
            "--download-url": args.download_url is not None,
        }
    )
    ignored = (["--tuned"] if args.tuned else []) + [flag for flag, was_given in given.items() if was_given]
    recommender, details = serving.load_recommender(args.load_dir)
    if ignored:
        recommend.progress(
            f"note: {', '.join(ignored)} ignored: the recommender in {args.load_dir} is already trained"
        )
    titles = movie_space.catalogue_titles(recommender) if args.user is None else None
    question = check_question(args, details["catalogue_size"], details["rated_counts"], titles)
    stopwatch.lap("load")
    answer(question, args, recommender=recommender)
    stopwatch.lap("query")


def run_evaluate(args: argparse.Namespace, stopwatch: Stopwatch, strategy: tf.distribute.Strategy) -> None:
    if args.repeat is not None and args.seed + args.repeat - 1 > 2**32 - 1:
        raise UsageError(f"--seed {args.seed} with --repeat {args.repeat} runs past the largest seed, 4294967295")
    if args.load_dir is not None or args.save_dir is not None:
        raise UsageError("--evaluate trains its own model on the 80% split; it cannot use --load-dir or --save-dir")
    check_data_dir(args.data_dir)
    if args.tensorboard is not None:
        tensorboard_log.check_tensorboard_dir(args.tensorboard)
    data = download.load_movielens(args.data_dir, args.download_url, args.dataset)
    log = tensorboard_log_for(args) if distribute.is_chief(strategy) else None
    stopwatch.lap("load")
    repeat = args.repeat or 1
    seeds = list(range(args.seed, args.seed + repeat))
    results = evaluation.evaluate(data, recipe_from(args), seeds, log, strategy)
    stopwatch.lap("evaluation")
    if args.repeat is None:
        results["two_tower"] = results["two_tower"][0]
    else:
        # Most-popular is the same on every seed: its spread is honestly zero.
        results.update(
            repeat=repeat,
            seeds=seeds,
            two_tower=evaluation.spread(results["two_tower"]),
            most_popular=evaluation.spread([results["most_popular"]] * repeat),
        )
    print_evaluation(results, args.json)


def quiet_logs(distribute_name: str) -> tf.distribute.Strategy:
    """Keeps TensorFlow's and TFDS's own logging out of the way: stderr is for this program's progress.
    Returns the --distribute strategy, made here because a multi-worker one must come before any op."""
    tf.get_logger().setLevel("ERROR")
    tf.autograph.set_verbosity(0)
    absl_logging.set_verbosity(absl_logging.ERROR)
    if distribute_name == "multi-worker":
        distribute.check_tf_config()
    # TensorFlow looks for a GPU the first time it runs an op and logs from C++ when there is none.
    with recommend.native_stderr_captured():
        strategy = distribute.distribution_strategy(distribute_name)
        tf.config.list_logical_devices()
    return strategy


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as parser_exit:  # argparse exits for --help and for usage errors (already reported)
        return int(parser_exit.code or 0)
    stopwatch = Stopwatch()
    try:
        strategy = quiet_logs(args.distribute)
        if args.repeat is not None and not args.evaluate:
            raise UsageError("--repeat repeats an --evaluate run; it does nothing for --user, --similar-to or --liked")
        if args.distribute != "none" and args.load_dir is not None:
            raise UsageError("--distribute trains, and --load-dir trains nothing")
        # A worker other than the first trains its share and leaves quietly: nothing on stdout or stderr.
        quiet = contextlib.ExitStack()
        if not distribute.is_chief(strategy):
            devnull = quiet.enter_context(open(os.devnull, "w"))
            quiet.enter_context(contextlib.redirect_stdout(devnull))
            quiet.enter_context(contextlib.redirect_stderr(devnull))
        elif args.distribute != "none":
            recommend.progress(distribute.describe_strategy(strategy))
        with quiet:
            if args.evaluate:
                run_evaluate(args, stopwatch, strategy)
            elif args.load_dir is not None:
                run_load(args, stopwatch)
            else:
                run_recommend(args, stopwatch, strategy)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except (DataUnavailableError, TrainingDiverged, SaveFailed) as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    except (tf.errors.ResourceExhaustedError, MemoryError) as error:
        detail = (getattr(error, "message", None) or str(error) or "out of memory").strip().splitlines()[0]
        print(
            f"{parser.prog}: ran out of memory ({detail[:200]}); try a smaller --batch-size or --embedding-dim",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read stdout has gone (`... | head`): point stdout at nothing so the final flush cannot
        # fail too, and end as a program stopped by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # A bug, or a failure nobody foresaw: summarise it, trace on request.
        if args.debug:
            raise
        if args.distribute != "none" and isinstance(error, tf.errors.OpError) and "OpKernel" in str(error):
            print(f"{parser.prog}: {distribute.no_kernel_message(args.distribute, error)}", file=sys.stderr)
            return 1
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"{parser.prog}: unexpected {type(error).__name__}: {detail[:300]}\n"
            "  Run again with --debug to see the full trace, and please report it.",
            file=sys.stderr,
        )
        return 1
    if args.timings:
        recommend.progress(stopwatch.report())
    return 0
