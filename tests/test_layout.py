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


def test_the_core_imports_only_the_command_line_and_only_inside_main():
    tree = ast.parse(open(os.path.join(ROOT, "recommend.py"), encoding="utf-8").read())
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    assert imported_modules(tree) == imported_modules(main) == {"beyond.cli"}


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
