"""The documents cannot go stale: every example shown in README.md and docs/ prints what it shows, the
README's links into recommend.py point at the functions they name, and its summary table is the one the
evaluation doc shows. The examples run on the real MovieLens 100k (see conftest.real_movielens)."""

import os
import re
import sys

import pytest

from conftest import real_movielens_reason

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import check_docs  # noqa: E402

# The slow examples are not collected here at all: benchmarks/check_docs.py runs them.
QUICK = [example for example in check_docs.all_examples() if not example.slow]


def test_the_documents_show_examples_and_mark_the_slow_ones():
    every = check_docs.all_examples()
    assert len(QUICK) >= 6
    assert {example.document for example in QUICK} >= {"README.md", "docs/what-it-learned.md"}
    assert [example.command for example in every if example.slow] == [
        "python recommend.py --evaluate --repeat 5 2>/dev/null",
        "python recommend.py --evaluate --tuned --repeat 5 2>/dev/null",
    ]


@pytest.mark.parametrize("example", QUICK, ids=[example.name for example in QUICK])
def test_each_example_prints_what_its_document_shows(example):
    reason = real_movielens_reason()
    if reason and os.environ.get("REQUIRE_MOVIELENS"):
        pytest.fail(f"REQUIRE_MOVIELENS is set, but {reason}")
    if reason:
        pytest.skip(reason)
    _, shown = check_docs.run(example)
    problem = check_docs.difference(example, shown)
    assert problem is None, problem


def test_a_changed_example_is_reported_with_its_document_and_line():
    example = check_docs.Example(
        "docs/made-up.md", 12, "python recommend.py --user 42", ["rank 1  Heat"], False
    )
    problem = check_docs.difference(example, ["rank 1  Fargo"])
    assert problem.startswith("docs/made-up.md:12: python recommend.py --user 42\n")
    assert "-rank 1  Heat" in problem and "+rank 1  Fargo" in problem
    # Durations and the peak memory may differ; a title, an order or a printed digit may not.
    timed = check_docs.Example("README.md", 3, "python recommend.py --user 42", ["loss 7.792 (0.5s)"], False)
    assert check_docs.difference(timed, ["loss 7.792 (12.3s)"]) is None
    assert check_docs.difference(timed, ["loss 7.793 (0.5s)"]) is not None


@pytest.mark.parametrize(
    "command, argv, stdout, stderr",
    [
        ('python recommend.py --liked "star wars" --k 3', ["--liked", "star wars", "--k", "3"], True, True),
        ("python recommend.py --user 42 --json 2>/dev/null", ["--user", "42", "--json"], True, False),
        ("python recommend.py --user 42 --timings > /dev/null", ["--user", "42", "--timings"], False, True),
        ("python recommend.py --user 1   # a comment", ["--user", "1"], True, True),
    ],
)
def test_an_example_command_becomes_the_arguments_main_takes(command, argv, stdout, stderr):
    assert check_docs.arguments(command) == (argv, stdout, stderr)


def test_the_readmes_links_into_recommend_py_point_at_what_they_name():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    links = re.findall(r"\[`(\w+)`\]\(recommend\.py#L(\d+)\)", readme)
    assert [name for name, _ in links] == [
        "load_movielens",
        "build_vocabularies",
        "MovieLensModel",
        "train",
        "build_index",
        "recommend",
    ]
    lines = open(os.path.join(ROOT, "recommend.py"), encoding="utf-8").read().splitlines()
    for name, line in links:
        assert re.match(
            rf"(def|class) {name}\b", lines[int(line) - 1]
        ), f"README.md links {name} to line {line}"


def test_the_readmes_quality_table_is_the_evaluation_docs_mean_and_spread():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    tables = {
        example.command: example.expected
        for example in check_docs.examples("docs/evaluation.md")
        if "--repeat 5" in example.command
    }
    shown = {}
    for command, column in [
        ("python recommend.py --evaluate --repeat 5 2>/dev/null", "tutorial"),
        ("python recommend.py --evaluate --tuned --repeat 5 2>/dev/null", "tuned"),
    ]:
        for line in tables[command]:
            metric, *cells = re.split(r"\s{2,}", line.strip())
            if metric.startswith(("top_", "recall", "ndcg")):
                shown[metric, column], shown[metric, "most_popular"] = cells[0], cells[1].split(" ± ")[0]
    rows = re.findall(r"^\| (\w+) \| ([\d.]+ ± [\d.]+) \| ([\d.]+ ± [\d.]+) \| ([\d.]+) \|$", readme, re.M)
    assert len(rows) == 3
    for metric, tutorial, tuned, most_popular in rows:
        assert (tutorial, tuned, most_popular) == (
            shown[metric, "tutorial"],
            shown[metric, "tuned"],
            shown[metric, "most_popular"],
        ), metric


def test_every_link_between_the_documents_reaches_a_file_and_every_anchor_a_heading():
    for document in check_docs.documents():
        text = open(os.path.join(ROOT, document), encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"https?://", target):
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(ROOT, os.path.dirname(document), path)) if path else None
            assert file is None or os.path.exists(file), f"{document} links to {target}, which is not there"
            if anchor and not anchor.startswith("L"):
                linked = open(file, encoding="utf-8").read() if file else text
                headings = {
                    re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
                    for heading in re.findall(r"^#+ (.+)$", linked, re.M)
                }
                assert anchor in headings, f"{document} links to #{anchor}, which no heading makes"


def test_the_map_from_the_tutorial_puts_each_quickstart_statement_beside_the_line_that_does_its_job():
    text = open(os.path.join(ROOT, "docs", "from-the-tutorial.md"), encoding="utf-8").read()
    # The quickstart's statements, each shown, in the quickstart's order.
    statements = [
        'tfds.load("movielens/100k-ratings"',
        'tfds.load("movielens/100k-movies"',
        "ratings = ratings.map(",
        "movies = movies.map(",
        "user_ids_vocabulary.adapt(",
        "movie_titles_vocabulary.adapt(movies)",
        "class MovieLensModel(tfrs.Model)",
        "return self.task(user_embeddings, movie_embeddings)",
        "user_model = tf.keras.Sequential(",
        "task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(",
        "model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5))",
        "model.fit(ratings.batch(4096), epochs=3)",
        "index = tfrs.layers.factorized_top_k.BruteForce(model.user_model)",
        "index.index_from_dataset(",
        'index(np.array(["42"]))',
    ]
    places = [text.index(statement) for statement in statements]
    assert places == sorted(places)
    # Each link into recommend.py lands on a line that holds what the link shows.
    lines = open(os.path.join(ROOT, "recommend.py"), encoding="utf-8").read().splitlines()
    links = re.findall(r"\[`([^`]+)`\]\(\.\./recommend\.py#L(\d+)\)", text)
    assert len(links) >= 20
    for code, line in links:
        assert code in lines[int(line) - 1], f"docs/from-the-tutorial.md links {code!r} to line {line}"
    # Each test it names exists.
    tests = "".join(
        open(os.path.join(ROOT, "tests", name), encoding="utf-8").read()
        for name in os.listdir(os.path.join(ROOT, "tests"))
        if name.endswith(".py")
    )
    for name in re.findall(r"`(test_\w+)", text):
        assert re.search(rf"def {name}", tests), f"docs/from-the-tutorial.md names {name}, which no test is"
