"""The command line's options: the parser, and the checks of what was asked (python recommend.py --help).

The tutorial takes no options. This module gives recommend.py its flags, with a type and a default for each
shown in --help, and refuses a mistake before any data is read or anything trained:

    1. build_parser: every flag, with one-line errors instead of argparse's usage block
    2. recipe_from: the tutorial's or the tuned recipe, with the flags that override it; note_unused
       names the flags given that it does not use
    3. check_question: an unknown user, a title that names no movie, a k larger than what is left

    python recommend.py --help
    python recommend.py --user 42 --k 5 --epochs 10 --learning-rate 0.1
"""

import argparse
import dataclasses
import math
import os
import urllib.parse

import recommend
from beyond import movie_space, recipes
from beyond.guards import UsageError

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


MAX_SEED = 2**32 - 1  # the largest seed numpy's and TensorFlow's accept


def seed_number(text: str) -> int:
    return whole_number(text, minimum=0, maximum=MAX_SEED)


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
    (
        "--epochs",
        positive_int,
        "epochs",
        "N",
        "passes over the ratings (for --tuned's alternating least squares, the most before it converges)",
    ),
    ("--embedding-dim", positive_int, "embedding_dim", "N", "numbers per user and per movie embedding"),
    (
        "--learning-rate",
        positive_float,
        "learning_rate",
        "RATE",
        "learning rate of --optimizer adagrad or adam",
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
        training.add_argument(
            flag, type=parse, metavar=metavar, help=f"{meaning} (default: {defaults(name)})"
        )
    training.add_argument(
        "--optimizer",
        choices=("adagrad", "adam", "als"),
        help="how the towers are trained: by Adagrad's or Adam's gradient steps, or, with --tuned, by "
        "alternating least squares, which moves each user's vector, then each movie's, to nearly its best "
        "(default: adagrad; als with --tuned)",
    )
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


def defaults(name: str) -> str:
    """A recipe field's default for --help: the tutorial's, and the tuned recipe's where it differs."""
    tutorial = getattr(recipes.TUTORIAL, name)
    text = f"{tutorial:g}"
    for recipe, flags in ((recipes.TUNED, "--tuned"), (recipes.TUNED_BY_ADAM, "--tuned --optimizer adam")):
        if getattr(recipe, name) != tutorial:
            text += f"; {getattr(recipe, name):g} with {flags}"
    return text


def check_optimizer(args: argparse.Namespace) -> None:
    """Refuses alternating least squares where it cannot train."""
    if args.optimizer == "als" and not args.tuned:
        raise UsageError(
            "--optimizer als needs --tuned: alternating least squares solves implicit ALS's loss, and the "
            "tutorial's softmax has no such exact solution"
        )
    if args.tuned and args.optimizer in (None, "als") and args.distribute != "none":
        raise UsageError(
            "--tuned trains by alternating least squares, on one device; for --distribute, add "
            "--optimizer adam, whose gradient steps tf.distribute shares out"
        )


def recipe_from(args: argparse.Namespace) -> "recipes.TutorialRecipe":
    """The recipe --tuned and --optimizer choose, with whatever the command line set explicitly."""
    overrides = {
        name: getattr(args, name)
        for name in [name for _, _, name, _, _ in RECIPE_OPTIONS] + ["optimizer"]
        if getattr(args, name) is not None
    }
    return dataclasses.replace(recipes.choose(args.tuned, args.optimizer), **overrides)


def note_unused(args: argparse.Namespace, recipe: "recipes.TutorialRecipe") -> None:
    """A note on stderr names the options given that the recipe does not use."""
    unused, why = recipe.unused_options()
    ignored = [
        flag for flag, _, name, _, _ in RECIPE_OPTIONS if flag in unused and getattr(args, name) is not None
    ]
    if ignored:
        recommend.progress(f"note: {', '.join(ignored)} ignored: {why}")


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


def nested(first: str, second: str) -> bool:
    """True when one folder is, or is inside, the other."""
    first, second = os.path.realpath(first), os.path.realpath(second)
    return os.path.commonpath([first, second]) in (first, second)
