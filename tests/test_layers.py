"""The layers the README describes are the import-linter contract CI checks, and every module
of the package has its place in them."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "popjax"


def contract_layers() -> list[set[str]]:
    """The layers contract's layers, top first, each a set of module names under popjax."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [
        {name.strip().removeprefix("popjax.") for name in re.split(r"[:|]", layer)}
        for layer in layers
    ]


def readme_layers() -> list[set[str]]:
    """The README's "How it works" table: each layer's modules, in the table's order."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| layer | module | owns |") :].split("\n\n")[0]
    layers: list[set[str]] = []
    for row in table.splitlines()[2:]:
        layer, modules = (cell.strip() for cell in row.strip("|").split("|")[:2])
        if layer:
            layers.append(set())
        for path in re.findall(r"`([a-z_/0-9]+)\.py`", modules):
            # A package's modules are listed one by one; the contract names the package.
            layers[-1].add(path.split("/")[0])
    return layers


def package_modules() -> set[str]:
    """Every module of popjax, a subpackage counted once."""
    return {
        path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or path.parent != PACKAGE
    }


def test_the_readme_table_is_the_contract():
    assert readme_layers() == contract_layers()


def test_every_module_has_a_layer():
    placed = set().union(*contract_layers())
    assert package_modules() == placed, (
        "place each module in a layer of pyproject.toml's import-linter contract: "
        f"unplaced {sorted(package_modules() - placed)}, gone {sorted(placed - package_modules())}"
    )
