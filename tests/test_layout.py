"""The shape of the code base: import directions between the five packages, heavy dependencies kept
optional, our `kernels` never mistaken for Hugging Face's, and the docs that list settings and
commands."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "memory", "indexers", "reasoning", "service")

# Which of our packages each package may import (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "kernels": set(),
    "memory": {"kernels"},
    "indexers": {"memory", "kernels"},
    "reasoning": {"memory", "kernels"},
    "service": {"kernels", "memory", "indexers", "reasoning"},
}

HEAVY = ("torch", "faiss", "av", "decord", "faster_whisper", "sentence_transformers", "transformers")


def _py_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports_in(source: str, module: str, is_pkg: bool) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in a module's source, anywhere in it (functions and
    TYPE_CHECKING blocks included), relative imports resolved, plus literal `import_module("...")` and
    `__import__("...")` calls."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_pkg:
                    base = base[:-1]
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    return _imports_in(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py")


def test_every_package_has_python_files() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), f"{package}/__init__.py is missing"
        assert _py_files(package), f"no .py files under {package}/"


def test_import_walker_resolves_relative_and_nested_imports() -> None:
    """The walker the direction test relies on sees every form of import."""
    src = (
        "from ..indexers import x\n"
        "from . import y\n"
        "from .z import w\n"
        "def f():\n"
        "    import reasoning.search\n"
        "    importlib.import_module('service.cli')\n"
        "if TYPE_CHECKING:\n"
        "    from kernels.shots import B\n"
    )
    names = [n for _, n in _imports_in(src, "memory.sub.mod", is_pkg=False)]
    assert sorted(names) == sorted(
        ["memory.indexers", "memory.sub", "memory.sub.z", "reasoning.search", "service.cli", "kernels.shots"]
    )
    names = [n for _, n in _imports_in("from .. import q\nfrom .a import b\n", "memory.sub", is_pkg=True)]
    assert sorted(names) == ["memory", "memory.sub.a"]
    assert _module_name(ROOT / "memory" / "migrations" / "env.py") == "memory.migrations.env"
    assert _module_name(ROOT / "memory" / "__init__.py") == "memory"


@pytest.mark.parametrize("package", PACKAGES)
def test_import_directions(package: str) -> None:
    """kernels imports none of the others; memory only kernels; indexers memory+kernels; reasoning
    memory+kernels (never indexers); nothing but service imports service."""
    bad = []
    checked = 0
    for path in _py_files(package):
        for line, name in _imported_modules(path):
            top = name.split(".")[0]
            if top not in PACKAGES or top == package:
                continue
            checked += 1
            if top not in ALLOWED[package]:
                bad.append(
                    f"{path.relative_to(ROOT)}:{line} imports {name} ({package} -> {top} is forbidden)"
                )
    assert not bad, "forbidden import arrows:\n" + "\n".join(bad)
    if package in ("indexers", "reasoning", "service"):  # the walk really sees their cross-package imports
        assert checked > 0, f"no import of another vidmem package found under {package}/"


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_heavy_dependencies_stay_optional() -> None:
    """Importing the packages (and the CLI module) loads no heavy backend."""
    code = (
        "import sys\n"
        "import service.cli, memory, reasoning, indexers, kernels\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print('LOADED', loaded)\n"
        "assert not loaded, loaded\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout


def test_heavy_dependency_check_detects_a_heavy_import() -> None:
    """The check above is not vacuous: once a stage's backend is imported, it shows in sys.modules."""
    code = "import sys\nimport memory.vectors\nmemory.vectors._flat_index(4)\nprint('faiss' in sys.modules)\n"
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "True"


def test_transformers_does_not_take_our_kernels_for_huggingface_kernels() -> None:
    """Hugging Face's `kernels` shares our package's import name. Installed beside ours (transformers
    5.25 requires it), transformers reads its version, then imports ours under that name and fails on
    every model load: so no other distribution may provide `kernels`, and transformers must not
    believe it has theirs."""
    code = (
        "import importlib.metadata, kernels, pathlib\n"
        "assert pathlib.Path(kernels.__file__).resolve().parent.parent == pathlib.Path.cwd().resolve(), kernels.__file__\n"
        "owners = set(importlib.metadata.packages_distributions().get('kernels', []))\n"
        "assert owners == {'vidmem'}, f'kernels is provided by {owners}: uninstall the others (see pyproject)'\n"
        "from transformers.utils import import_utils\n"
        "assert not import_utils.is_kernels_available()\n"
        "print('OK')\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK")


def test_configuration_doc_lists_every_setting() -> None:
    from service.settings import Settings

    doc = ROOT / "docs" / "configuration.md"
    assert doc.is_file(), "docs/configuration.md is missing: it must list every VIDMEM_* setting"
    text = doc.read_text(encoding="utf-8")
    fields = list(Settings.model_fields)
    assert fields, "Settings has no fields"
    missing = [f"VIDMEM_{name.upper()}" for name in fields if f"VIDMEM_{name.upper()}" not in text]
    assert not missing, f"docs/configuration.md does not mention {missing}"


def test_readme_names_the_demo_and_test_commands() -> None:
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text(encoding="utf-8")
    for command in ("make demo", "make test"):
        assert command in text, f"README.md does not mention `{command}`"


# Test modules at the top of tests/: the repository's shape, and the benchmarks' cut set.
TOP_LEVEL_TESTS = {"test_layout.py", "test_cutset.py"}
# tests/bench/ beside its bench_*.py: the tooling the benchmarks (and fitting scripts) share.
BENCH_TOOLING = {"__init__.py", "common.py", "copies.py", "cutset.py", "tutorialvqa.py", "run_all.py"}


def test_tests_mirror_the_packages_and_import_no_other_test_module() -> None:
    """tests/<package>/ for each code package; shared helpers live in tests/helpers.py (fixtures in
    conftest.py), never in a test module that another one imports."""
    for package in ("kernels", "memory", "indexers", "reasoning", "service"):
        assert list((ROOT / "tests" / package).glob("test_*.py")), f"tests/{package}/ has no tests"
    assert not [p.name for p in (ROOT / "tests").glob("test_*.py") if p.name not in TOP_LEVEL_TESTS]
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.split(".")[-1].startswith("test_") and n.startswith("tests.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}: {names[0]}")
    assert offenders == []


def test_benchmarks_fitting_scripts_and_tests_live_apart() -> None:
    """Tests are `test_*.py` in tests/ or tests/<package>/; tests/bench/ holds benchmarks (`bench_*.py`)
    and their tooling, and never imports tests/fit/; tests/fit/ holds fitting scripts, which set
    shipped parameters and may use the benchmarks' tooling."""
    tests = ROOT / "tests"
    allowed_dirs = {tests, *(tests / package for package in PACKAGES)}
    stray = [str(p.relative_to(ROOT)) for p in tests.rglob("test_*.py") if p.parent not in allowed_dirs]
    assert not stray, f"test modules outside tests/ and tests/<package>/: {stray}"

    bench = sorted(p.name for p in (tests / "bench").glob("*.py"))
    assert any(name.startswith("bench_") for name in bench)
    odd = [n for n in bench if not n.startswith("bench_") and n not in BENCH_TOOLING]
    assert not odd, (
        f"tests/bench/ holds benchmarks (bench_*.py) and their tooling {sorted(BENCH_TOOLING)}, not {odd}: "
        "a fitting script goes to tests/fit/, a test to tests/, new tooling into BENCH_TOOLING"
    )
    assert not list((tests / "bench").glob("*/*.py")), "tests/bench/ has no sub-packages"

    fit = sorted(p.name for p in (tests / "fit").glob("*.py"))
    assert "__init__.py" in fit and len(fit) > 1, "tests/fit/ is the package of the fitting scripts"
    assert not [n for n in fit if n.startswith("bench_")], "a benchmark in tests/fit/ belongs in tests/bench/"

    crossing = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in (tests / "bench").glob("*.py")
        for line, name in _imported_modules(path)
        if name == "tests.fit" or name.startswith("tests.fit.")
    ]
    assert not crossing, "a benchmark must not import a fitting script:\n" + "\n".join(crossing)
