"""The layers the guide describes (docs/how-it-works.md) are the import-linter contract CI
checks, and every module of the package has its place in them."""

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


def guide_layers() -> list[set[str]]:
    """The guide's "How it works" table: each layer's modules, in the table's order."""
    text = (ROOT / "docs" / "how-it-works.md").read_text()
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


def test_the_guide_table_is_the_contract():
    assert guide_layers() == contract_layers()


def test_every_module_has_a_layer():
    placed = set().union(*contract_layers())
    assert package_modules() == placed, (
        "place each module in a layer of pyproject.toml's import-linter contract: "
        f"unplaced {sorted(package_modules() - placed)}, gone {sorted(placed - package_modules())}"
    )


def popjax_imports(path: Path) -> set[str]:
    """Every popjax module a file imports, late (in a function) and type-checking ones too."""
    import ast

    def is_module(name: str) -> bool:
        folder = ROOT.joinpath(*name.split("."))
        return folder.with_suffix(".py").is_file() or (folder / "__init__.py").is_file()

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("popjax"):
            # ``from package import module`` imports that module, and the package too.
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if is_module(name) else node.module)
            if node.module != "popjax":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("popjax")}
    return found


def test_no_import_cycle_late_imports_included():
    """The layers contract orders layers; within a layer siblings may import each other, so a
    cycle there (or through a late import) is found here."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = popjax_imports(path) - {name}
    done, path = set(), []

    def visit(module):
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module) :])}"
        if module in done:
            return
        path.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
