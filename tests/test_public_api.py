"""The built-in tasks are written with what a user can import: every popjax name they use is
part of the public API listed in ``popjax/__init__.py``."""

import ast
from pathlib import Path

import pytest

import popjax

TASKS = Path(popjax.__file__).parent / "tasks"


def popjax_imports(path: Path):
    """``(module, name)`` for every ``from popjax... import name`` in a file, late ones too."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("popjax"):
            for alias in node.names:
                yield node.module, alias.name


@pytest.mark.parametrize("path", sorted(TASKS.glob("*.py")), ids=lambda p: p.name)
def test_builtin_tasks_use_the_public_api_alone(path):
    public_modules = {
        f"popjax.{name}" for name in popjax.__all__ if hasattr(getattr(popjax, name), "__file__")
    }
    for module, name in popjax_imports(path):
        if module.startswith("popjax.tasks"):
            continue  # the tasks themselves are public: popjax.tasks
        if module == "popjax":
            assert name in popjax.__all__, (path.name, name)
            continue
        imported = getattr(__import__(module, fromlist=[name]), name)
        assert module in public_modules or getattr(popjax, name, None) is imported, (
            f"{path.name} imports {name} from {module}, which popjax does not export"
        )


def test_the_glossary_names_what_the_code_has():
    """Every ``popjax.x.y`` the glossary points to exists, so the words and the code agree."""
    import importlib
    import re

    text = (Path(__file__).parent.parent / "docs" / "glossary.md").read_text()
    names = set(re.findall(r"`(popjax(?:\.\w+)+)`", text))
    assert len(names) > 10
    for name in sorted(names):
        parts = name.split(".")
        for split in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                found = importlib.import_module(".".join(parts[:split]))
                break
            except ImportError:
                continue
        for attribute in parts[split:]:
            assert hasattr(found, attribute), f"the glossary names {name}, which does not exist"
            found = getattr(found, attribute)
