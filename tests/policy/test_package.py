"""The package's import surface: what LeRobot imports stays free of the tools and their dependencies."""

import ast
import subprocess
import sys
from pathlib import Path

import lerobot_policy_act_rtc_alldelays

PACKAGE = Path(lerobot_policy_act_rtc_alldelays.__file__).parent
TOOL_DEPENDENCIES = ("matplotlib", "metaworld", "lerobot_policy_act_smooth")


def test_importing_the_package_loads_no_tool_module_and_no_tool_dependency():
    code = (
        "import sys, lerobot_policy_act_rtc_alldelays\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = modules.stdout.split()
    assert not [m for m in loaded if m.startswith("lerobot_policy_act_rtc_alldelays.tools")]
    assert not [m for m in loaded if m.split(".")[0] in TOOL_DEPENDENCIES]


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a package module imports (relative imports resolved)."""
    package_parts = ["lerobot_policy_act_rtc_alldelays", *path.parent.relative_to(PACKAGE).parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package_parts[: len(package_parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_outside_the_tools_subpackage_imports_a_tool():
    core_modules = [p for p in PACKAGE.rglob("*.py") if "tools" not in p.relative_to(PACKAGE).parts]
    assert core_modules, "the policy core is missing"
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported_modules(path) if ".tools" in n)
        for path in core_modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_version_is_defined_once_and_matches_the_installed_metadata():
    from importlib.metadata import version

    assert version("lerobot_policy_act_rtc_alldelays") == lerobot_policy_act_rtc_alldelays.__version__


def test_the_peer_plugin_is_installed_by_the_peers_extra_only():
    """ACTSmooth (the study's `act_smooth` variant) is optional: pinned in the `peers` extra, never
    required."""
    from importlib.metadata import requires

    requirements = requires("lerobot_policy_act_rtc_alldelays")
    peer = [r for r in requirements if r.startswith("lerobot-policy-act-smooth")]
    assert peer == ['lerobot-policy-act-smooth==0.1.0; extra == "peers"']


def test_no_class_of_the_package_is_over_300_lines():
    """A config class is its fields and their meaning, a policy its methods: long rules live in functions
    beside them (`config_checks`)."""
    long_classes = [
        f"{path.relative_to(PACKAGE)}: {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300
    ]
    assert long_classes == []
