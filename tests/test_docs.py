"""The documentation site: every page in the nav and every nav entry a page; the API reference
shows every public name, and each has a docstring of its own; the README stays a front page
whose example config runs. (.ci/run builds the site itself with ``mkdocs build --strict``.)"""

import inspect
import re
import tomllib
from pathlib import Path

import pytest

import popjax
from popjax.plan import Plan

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def nav_pages() -> list[str]:
    """The pages the nav of mkdocs.yml lists (commented-out entries left out), as paths under
    docs/. Read as text: the file's YAML needs no parser to list them."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r"^\s*- (?:[^#\n]*: )?([\w/.-]+\.md)\s*$", nav, flags=re.M)


def test_the_nav_lists_every_page_and_only_pages_that_exist():
    pages = nav_pages()
    assert len(pages) == len(set(pages))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert set(pages) == on_disk
    assert {"tasks.md", "loggers.md", "reference/index.md"} <= set(pages)


def public_names():
    """``(name, module, attribute)`` of each name in ``popjax.__all__``; attribute None for a
    module."""
    return [(name, *popjax._EXPORTS[name]) for name in popjax.__all__]


@pytest.mark.parametrize("name", popjax.__all__)
def test_every_public_name_has_a_docstring_of_its_own(name):
    value = getattr(popjax, name)
    doc = inspect.getdoc(value) or ""
    assert len(doc.split()) >= 5, f"popjax.{name} needs a docstring"
    # A dataclass without a docstring gets its signature as one: that is not documentation.
    assert not doc.startswith(f"{name}("), f"popjax.{name} needs a docstring"


def test_the_reference_shows_every_public_name():
    shown = {
        path.stem: set(re.findall(r"^::: ([\w.]+)$", path.read_text(), flags=re.M))
        for path in REFERENCE.glob("*.md")
    }
    modules = {module for _, module, attribute in public_names() if attribute is None}
    for module in modules:
        page = module.removeprefix("popjax.")
        assert module in shown.get(page, set()), f"docs/reference/{page}.md lacks ::: {module}"
    for name, module, attribute in public_names():
        if attribute is None:
            continue
        if module in modules:  # shown on its module's page, linked from the index
            assert f"`popjax.{name}`: see" in (REFERENCE / "index.md").read_text()
        else:
            assert f"{module}.{attribute}" in shown["index"], f"the reference lacks {name}"
    # And nothing that no longer exists: each ::: target imports.
    for targets in shown.values():
        for target in targets:
            module, _, attribute = target.rpartition(".")
            if target in modules or target.startswith("popjax.tasks."):
                continue
            assert hasattr(__import__(module, fromlist=[attribute]), attribute), target


def test_the_readme_is_a_front_page_whose_config_runs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    # The two set-up commands, unchanged.
    assert ".venv/bin/pip install . && .venv/bin/popjax run\n" in text
    assert ".venv/bin/pip install '.[test]' && .venv/bin/python -m pytest\n" in text
    for link in re.findall(r"\]\((docs/[\w/.-]*)\)", text):
        assert (ROOT / link).exists(), link
    (config,) = re.findall(r"```toml\n(# sweep.toml\n.*?)```", text, flags=re.S)
    plan = Plan.from_config(popjax.SweepConfig.from_dict(tomllib.loads(config)))
    assert plan.config.population == 16 and plan.config.model["hidden"] == [512, 512]
