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
import os
import shlex
import sys
import time

import tensorflow as tf
from absl import logging as absl_logging

import recommend
from beyond import big_data, distribute, download, evaluation, guards, launch, movie_space, options
from beyond import serving, tensorboard_log
from beyond.guards import DataUnavailableError, SaveFailed, TrainingDiverged, UsageError


class Stopwatch:
    """Times the phases of a run, for --timings."""

    def __init__(self):
        # `python recommend.py` imports TensorFlow before main() runs; beyond/launch.py timed it.
        self.phases = {"import": launch.import_seconds}
        self.notes = {}  # a word on how a phase went, such as whether the data was parsed or read back
        self.lap_started_at = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.lap_started_at
        self.lap_started_at = now

    def report(self) -> str:
        parts = [
            f"{phase} {seconds:.1f}s" + (f" ({self.notes[phase]})" if phase in self.notes else "")
            for phase, seconds in self.phases.items()
        ]
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
    options.check_data_dir(args.data_dir)
    if args.save_dir is not None:
        serving.check_save_dir(args.save_dir)
    if args.tensorboard is not None:
        tensorboard_log.check_tensorboard_dir(args.tensorboard)
    if args.save_dir and args.tensorboard and options.nested(args.save_dir, args.tensorboard):
        raise UsageError(
            "--save-dir and --tensorboard must not be inside each other: each folder holds only its own files"
        )
    recipe = options.recipe_from(args)
    options.note_unused(args, recipe)
    big_data.check_memory(recipe)  # the sizes the options ask for, whatever the data
    data, how = download.load_movielens(args.data_dir, args.download_url, args.dataset)  # 1
    stopwatch.notes["load"] = how
    rated_counts = big_data.rated_titles_per_user(data)
    catalogue_size = len(data.catalogue)
    titles = [title.decode("utf-8") for title in data.catalogue] if args.user is None else None
    question = options.check_question(args, catalogue_size, rated_counts, titles)
    log = tensorboard_log_for(args, recipe) if distribute.is_chief(strategy) else None
    stopwatch.lap("load")

    big_data.check_memory(recipe, big_data.sizes_of(data))
    # One seed for Python, numpy and TensorFlow: the embeddings' starting values and the shuffling. On a
    # CPU that is enough for identical answers run after run; op determinism is not needed (docs/speed.md).
    tf.keras.utils.set_random_seed(args.seed)
    user_ids_vocabulary, movie_titles_vocabulary = recommend.build_vocabularies(data)  # 2
    stopwatch.lap("vocabularies")

    run = log.new_run(args.seed) if log else None
    callbacks = (log.callback(run),) if log else ()
    with strategy.scope():
        model = recipe.build_model(user_ids_vocabulary, movie_titles_vocabulary, data.catalogue)  # 3
        guards.run_training(model, data, recipe, args.seed, callbacks)  # 4
    stopwatch.lap("training")

    index = recommend.build_index(model, data)  # 5
    needs_recommender = args.save_dir is not None or "user" not in question
    recommender = None
    if needs_recommender:
        recommender = serving.build_recommender(model, index, data, recipe)
    stopwatch.lap("indexing")

    answer(question, args, index, data, None if "user" in question else recommender)  # 6
    stopwatch.lap("query")

    if log:
        log.write_projector(
            run, model.movie_model(data.catalogue), data.catalogue, big_data.ratings_per_title(data)
        )
        recommend.progress(
            f"TensorBoard log in {run}; to see it: tensorboard --logdir {shlex.quote(args.tensorboard)}"
        )

    if args.save_dir is not None and distribute.is_chief(strategy):
        details = {
            "dataset": data.size,
            "catalogue_size": catalogue_size,
            "rated_counts": rated_counts,
            "training": {
                "recipe": recipe.name,
                "seed": args.seed,
                **dataclasses.asdict(recipe),
            },
        }
        serving.save_recommender(recommender, details, args.save_dir)
        recommend.progress(f"Saved the recommender to {args.save_dir}")
        stopwatch.lap("saving")


def tensorboard_log_for(args: argparse.Namespace, recipe) -> "tensorboard_log.TensorBoardLog | None":
    if args.tensorboard is None:
        return None
    genres = tensorboard_log.read_movie_genres(args.data_dir, args.dataset)
    return tensorboard_log.TensorBoardLog(args.tensorboard, recipe.name, genres)


def run_load(args: argparse.Namespace, stopwatch: Stopwatch) -> None:
    if args.tensorboard is not None:
        raise UsageError("--tensorboard logs training, and --load-dir trains nothing")
    given = {flag: getattr(args, name) is not None for flag, _, name, _, _ in options.RECIPE_OPTIONS}
    given.update(
        {
            "--seed": args.seed != options.DEFAULT_SEED,
            "--data-dir": args.data_dir is not None,
            "--dataset": args.dataset != "100k",
            "--distribute": args.distribute != "none",
            "--optimizer": args.optimizer is not None,
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
    question = options.check_question(args, details["catalogue_size"], details["rated_counts"], titles)
    stopwatch.lap("load")
    answer(question, args, recommender=recommender)
    stopwatch.lap("query")


def run_evaluate(args: argparse.Namespace, stopwatch: Stopwatch, strategy: tf.distribute.Strategy) -> None:
    if args.repeat is not None and args.seed + args.repeat - 1 > options.MAX_SEED:
        raise UsageError(
            f"--seed {args.seed} with --repeat {args.repeat} runs past the largest seed, {options.MAX_SEED}"
        )
    if args.load_dir is not None or args.save_dir is not None:
        raise UsageError(
            "--evaluate trains its own model on the 80% split; it cannot use --load-dir or --save-dir"
        )
    options.check_data_dir(args.data_dir)
    if args.tensorboard is not None:
        tensorboard_log.check_tensorboard_dir(args.tensorboard)
    recipe = options.recipe_from(args)
    options.note_unused(args, recipe)
    big_data.check_memory(recipe)  # the sizes the options ask for, whatever the data
    data, stopwatch.notes["load"] = download.load_movielens(args.data_dir, args.download_url, args.dataset)
    log = tensorboard_log_for(args, recipe) if distribute.is_chief(strategy) else None
    stopwatch.lap("load")
    repeat = args.repeat or 1
    seeds = list(range(args.seed, args.seed + repeat))
    results = evaluation.evaluate(data, recipe, seeds, log, strategy)
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
    # TensorFlow looks for a GPU the first time it runs an op and logs from C++ when there is none.
    with launch.native_stderr_captured():
        strategy = distribute.distribution_strategy(distribute_name)
        tf.config.list_logical_devices()
    return strategy


def main(argv: list[str] | None = None) -> int:
    parser = options.build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as parser_exit:  # argparse exits for --help and for usage errors (already reported)
        return int(parser_exit.code or 0)
    stopwatch = Stopwatch()
    try:
        strategy = quiet_logs(args.distribute)
        if args.repeat is not None and not args.evaluate:
            raise UsageError(
                "--repeat repeats an --evaluate run; it does nothing for --user, --similar-to or --liked"
            )
        if args.distribute != "none" and args.load_dir is not None:
            raise UsageError("--distribute trains, and --load-dir trains nothing")
        options.check_optimizer(args)
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
        sizes = options.recipe_from(args).sizes_to_shrink()
        print(f"{parser.prog}: ran out of memory ({detail[:200]}); try a smaller {sizes}", file=sys.stderr)
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
