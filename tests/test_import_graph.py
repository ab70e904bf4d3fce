"""The package's modules import each other without a circle.

A circle makes the order of imports matter: whichever module of it is imported first sees the others half
initialised. Imports inside functions count too: deferring one only hides a circle until that call.
"""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import lerobot_policy_act_rtc_alldelays

PACKAGE = Path(lerobot_policy_act_rtc_alldelays.__file__).parent


def module_name(path: Path, package: Path) -> str:
    """`package/tools/x.py` -> `package.tools.x`; a subpackage's `__init__.py` -> its own name."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of the package -> the package's modules its source imports, at any depth of it.

    `from x import name` imports the module `x.name` where there is one, else `x`. The parent packages
    that Python imports on the way are not edges: every module needs its package's `__init__` first, and
    an `__init__` importing its own submodules is no circle.
    """
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        # The package that relative imports start from: a module's parent, an `__init__`'s own.
        anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = anchor[: len(anchor) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                imported.update(
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in paths else module
                    for alias in node.names
                )
        graph[name] = {module for module in imported if module in paths and module != name}
    return graph


def import_circle(graph: dict[str, set[str]]) -> list[str]:
    """The modules along one circle of the graph, the first repeated at the end; [] when there is none."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return error.args[1]
    return []


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(source)
    return root / "pkg"


def test_the_graph_has_absolute_relative_and_deferred_imports_of_the_package_only(tmp_path):
    package = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import f\n",
            "pkg/a.py": "import os\nimport pkg.sub.b\n\ndef f():\n    pass\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def g():\n    from .. import c\n",
            "pkg/c.py": "from pkg.sub import b\nfrom . import a, missing\n",
        },
    )
    assert import_graph(package) == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.c"},
        "pkg.c": {"pkg.sub.b", "pkg.a", "pkg"},
    }


def test_a_circle_closed_by_a_deferred_import_is_found(tmp_path):
    package = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .b import x\n",
            "pkg/b.py": "x = 1\n\ndef main():\n    from .a import y\n",
        },
    )
    circle = import_circle(import_graph(package))
    assert set(circle) == {"pkg.a", "pkg.b"} and circle[0] == circle[-1]


def test_the_package_has_no_import_circle():
    graph = import_graph(PACKAGE)
    assert any(graph.values()), "no import between the package's modules found: the graph is broken"
    circle = import_circle(graph)
    assert not circle, "import circle: " + " -> ".join(circle)
