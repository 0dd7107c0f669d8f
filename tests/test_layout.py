"""The layout the project keeps: recommend.py is the tutorial, and everything beyond it imports it."""

import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "beyond")


def imported_modules(path_or_node) -> set[str]:
    """The project modules a file (or one part of its syntax tree) imports: 'recommend' or 'beyond.<name>'."""
    tree = path_or_node
    if isinstance(path_or_node, str):
        tree = ast.parse(open(path_or_node, encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "beyond":
            found |= {f"beyond.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name == "recommend" or name.startswith("beyond.")}


def package_modules() -> dict[str, set[str]]:
    return {
        f"beyond.{name[:-3]}": imported_modules(os.path.join(PACKAGE, name))
        for name in sorted(os.listdir(PACKAGE))
        if name.endswith(".py") and name != "__init__.py"
    }


def test_importing_the_core_loads_nothing_beyond_the_tutorial():
    program = "import sys, recommend; print(sorted(m for m in sys.modules if m.split('.')[0] == 'beyond'))"
    completed = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_the_core_imports_the_package_only_in_main_and_in_the_launcher_before_its_imports():
    tree = ast.parse(open(os.path.join(ROOT, "recommend.py"), encoding="utf-8").read())
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    launcher = [
        node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    ]
    assert len(launcher) == 1 and len(launcher[0].body) <= 2  # at most two lines of plumbing
    assert imported_modules(main) == {"beyond.cli"}
    assert imported_modules(launcher[0]) == {"beyond.launch"}
    assert imported_modules(tree) == {"beyond.cli", "beyond.launch"}


TUTORIAL_LIBRARIES = {"numpy", "tensorflow", "tensorflow_datasets", "tensorflow_recommenders"}


def test_the_first_screen_is_the_docstring_and_the_imports_of_the_tutorials_libraries():
    source = open(os.path.join(ROOT, "recommend.py"), encoding="utf-8").read()
    step_1 = next(n for n, line in enumerate(source.splitlines(), 1) if line.startswith("# 1. "))
    assert step_1 <= 60
    tree = ast.parse(source)
    before_step_1 = [node for node in tree.body if node.lineno < step_1]
    docstring, *statements = before_step_1
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    imported, others = set(), []
    for node in statements:
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
        else:
            others.append(ast.unparse(node).splitlines()[0])
    assert TUTORIAL_LIBRARIES <= imported <= TUTORIAL_LIBRARIES | set(sys.stdlib_module_names)
    # Beside them: the one setting TensorFlow Recommenders needs before TensorFlow is imported, and the
    # hand-over to beyond/launch.py when the file is run as a program.
    assert others == ["if __name__ == '__main__':", "os.environ['TF_USE_LEGACY_KERAS'] = '1'"]


def modules_defining(name: str) -> list[str]:
    """The package modules that define a function NAME at their top level."""
    found = []
    for module in sorted(os.listdir(PACKAGE)):
        if module.endswith(".py"):
            tree = ast.parse(open(os.path.join(PACKAGE, module), encoding="utf-8").read())
            if any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body):
                found.append(module)
    return found


def test_one_module_chooses_the_recipe_and_nothing_else_asks_which_it_has():
    for module in sorted(os.listdir(PACKAGE)):
        if not module.endswith(".py") or module == "recipes.py":
            continue
        source = open(os.path.join(PACKAGE, module), encoding="utf-8").read()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            # isinstance(recipe, TunedRecipe), hasattr(model, ...) or getattr(recipe, ..., default): a question
            # of which recipe it is, which only the recipe itself may answer.
            call = ast.unparse(node.func) if isinstance(node, ast.Call) else ""
            asks = call in ("isinstance", "hasattr") or (call == "getattr" and len(node.args) == 3)
            assert not (
                asks and re.search(r"recipe|model|Recipe", ast.unparse(node))
            ), f"beyond/{module}: {ast.unparse(node)}"
            if isinstance(node, ast.Compare):
                assert "recipe.optimizer" not in ast.unparse(node), f"beyond/{module}: {ast.unparse(node)}"
        assert "TunedRecipe" not in source and "TutorialRecipe(" not in source, module
    # The flags are turned into a recipe in one function, which asks recipes.choose.
    callers = [
        module
        for module in sorted(os.listdir(PACKAGE))
        if module.endswith(".py")
        and "recipes.choose(" in open(os.path.join(PACKAGE, module), encoding="utf-8").read()
    ]
    assert callers == ["options.py"]
    assert modules_defining("train") == []  # the core's train() is the one function of that name


def test_error_handling_imports_no_recipe():
    modules = package_modules()
    reached, waiting = set(), ["beyond.guards"]
    while waiting:
        module = waiting.pop()
        for imported in modules.get(module, set()) - reached:
            reached.add(imported)
            waiting.append(imported)
    assert not reached & {"beyond.recipes", "beyond.tuned", "beyond.alternating_least_squares"}


def test_every_module_imports_the_core_and_none_imports_the_command_line():
    modules = package_modules()
    assert "beyond.cli" in modules and len(modules) >= 9
    for module, imports in modules.items():
        assert module == "beyond.cli" or "beyond.cli" not in imports, module
    importers_of_the_core = {module for module, imports in modules.items() if "recommend" in imports}
    # A module that does not import the core directly gets it through one that does.
    for module, imports in modules.items():
        assert module in importers_of_the_core or imports & importers_of_the_core, module


def test_the_imports_between_the_modules_have_no_cycle():
    modules = package_modules()
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, " -> ".join(visiting + [module])
        if module in done or module not in modules:
            return
        visiting.append(module)
        for imported in modules[module]:
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in modules:
        visit(module)


def test_the_core_reads_in_one_sitting_with_the_model_near_the_top():
    lines = open(os.path.join(ROOT, "recommend.py"), encoding="utf-8").read().splitlines()
    assert len(lines) <= 400
    model_line = next(
        number for number, line in enumerate(lines, 1) if re.match(r"class \w+\(tfrs\.Model\)", line)
    )
    assert model_line <= 160
    steps = [
        next(n for n, line in enumerate(lines) if line.startswith(f"# {step}. ")) for step in range(1, 7)
    ]
    assert steps == sorted(steps)
    for name in os.listdir(PACKAGE):
        if name.endswith(".py"):
            assert len(open(os.path.join(PACKAGE, name), encoding="utf-8").read().splitlines()) <= 500, name


def test_the_architecture_page_lists_each_modules_imports_as_the_code_has_them():
    page = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    rows = re.findall(r"^\| (\w+\.py) \| ([\w., ]+) \|$", page, re.M)
    documented = {module: set(imports.split(", ")) for module, imports in rows}

    def file_name(module: str) -> str:
        return "recommend.py" if module == "recommend" else module.split(".")[1] + ".py"

    actual = {
        file_name(module): {file_name(name) for name in imports}
        for module, imports in package_modules().items()
    }
    assert documented == actual, "docs/architecture.md's import table is out of date"
