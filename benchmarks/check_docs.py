"""Checks that every example shown in README.md and docs/ still prints what the document shows.

An example is a fenced block whose first line is `$ python recommend.py ...`; the lines after it are what
the command prints (stderr, then stdout; `2>/dev/null` or `> /dev/null` leave one out). Titles, order and
every number must match as shown, except durations ("1.2s") and the peak memory, which vary run to run.

tests/test_docs.py runs the quick examples on every test run. The ones that take minutes (the
`--repeat 5` tables) are marked in the document by the line `<!-- checked by benchmarks/check_docs.py -->`
just above the block; this script runs them too:

    python benchmarks/check_docs.py            # every example, the slow ones included
    python benchmarks/check_docs.py --quick    # only what tests/test_docs.py runs

It needs MovieLens 100k where TensorFlow Datasets finds it (TFDS_DATA_DIR) and prints, for each example
whose output differs, the document, the line and a diff; its exit status is 1 if any differs.
"""

import argparse
import contextlib
import dataclasses
import difflib
import io
import os
import re
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW_MARK = "<!-- checked by benchmarks/check_docs.py -->"
# What varies from run to run: durations such as "(1.2s)" or "training 3.4s", and the peak memory.
VARYING = [
    (re.compile(r"\b\d+(\.\d+)?s\b"), "#s"),
    (re.compile(r"peak memory \d+\.\d+ GiB"), "peak memory # GiB"),
]


@dataclasses.dataclass
class Example:
    document: str  # relative to the repository, e.g. "docs/speed.md"
    line: int  # the line of the `$ python recommend.py` command
    command: str
    expected: list[str]
    slow: bool

    @property
    def name(self) -> str:
        return f"{self.document}:{self.line}: {self.command}"


def documents() -> list[str]:
    docs = sorted(
        os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")
    )
    return ["README.md", *docs]


def examples(document: str) -> list[Example]:
    """The examples of one document, in order."""
    lines = open(os.path.join(ROOT, document), encoding="utf-8").read().splitlines()
    found, number = [], 0
    while number < len(lines):
        if lines[number].startswith("```") and number + 1 < len(lines):
            end = next(n for n in range(number + 1, len(lines)) if lines[n].startswith("```"))
            first = lines[number + 1]
            if first.startswith("$ python recommend.py"):
                slow = number > 0 and lines[number - 1].strip() == SLOW_MARK
                found.append(Example(document, number + 2, first[2:], lines[number + 2 : end], slow))
            number = end
        number += 1
    return found


def all_examples() -> list[Example]:
    return [example for document in documents() for example in examples(document)]


def arguments(command: str) -> tuple[list[str], bool, bool]:
    """The argv of `python recommend.py ...`, and whether its stdout and its stderr are shown."""
    words = shlex.split(command, comments=True)
    assert words[:2] == ["python", "recommend.py"], command
    argv, hidden = [], set()
    for word in words[2:]:
        if word in (">", "1>", "2>"):  # "> /dev/null": the stream's name now, its target next
            hidden.add(word.strip(">") or "1")
        elif word in (">/dev/null", "1>/dev/null", "2>/dev/null"):
            hidden.add(word.split(">")[0] or "1")
        elif word != "/dev/null":
            argv.append(word)
    return argv, "1" not in hidden, "2" not in hidden


def run(example: Example) -> tuple[int, list[str]]:
    """Runs the example in this process; returns its exit status and what the document would show."""
    sys.path.insert(0, ROOT)
    import recommend

    argv, shows_stdout, shows_stderr = arguments(example.command)
    out, err = io.StringIO(), io.StringIO()
    # An example that names a server on this machine must reach it directly, not through a proxy.
    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = recommend.main(argv)
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    shown = (err.getvalue().splitlines() if shows_stderr else []) + (
        out.getvalue().splitlines() if shows_stdout else []
    )
    return status, shown


def normalized(lines: list[str]) -> list[str]:
    for pattern, replacement in VARYING:
        lines = [pattern.sub(replacement, line) for line in lines]
    return [line.rstrip() for line in lines]


def difference(example: Example, shown: list[str]) -> str | None:
    """None when the run printed what the document shows; else the document, the example and a diff."""
    expected, actual = normalized(example.expected), normalized(shown)
    if expected == actual:
        return None
    diff = difflib.unified_diff(
        expected, actual, f"{example.document} (shown)", "what it prints now", lineterm=""
    )
    return f"{example.name}\n  prints something else than the document shows:\n" + "\n".join(diff)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the slow examples (default: run all)")
    args = parser.parse_args(argv)
    failures = 0
    for example in all_examples():
        if args.quick and example.slow:
            continue
        print(f"running {example.name}", file=sys.stderr, flush=True)
        _, shown = run(example)
        problem = difference(example, shown)
        if problem:
            failures += 1
            print(problem, file=sys.stderr)
    print(f"{failures} of the examples differ from their documents", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
