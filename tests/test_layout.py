"""The package's shape: the README's layout section lists every module, and no module uses
another module's private names (a private module is shared only inside its own folder)."""

import ast
import re
from pathlib import Path

from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "dlmed"


def _modules():
    return sorted(p.relative_to(PROJECT_ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _readme_listing() -> set:
    """Paths of the dlmed files named in the README's layout block (indentation gives the folder)."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Layout and development.*?```\n(.*?)```", text, re.S).group(1)
    listed, folders = set(), []
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        elif name.endswith(".py") and folders[:1] == ["dlmed"]:
            listed.add("/".join([*folders, name]))
    return listed


def test_readme_layout_lists_every_module():
    """Each module of dlmed/ is in the README's folder listing, and each listed module exists."""
    listed, actual = _readme_listing(), set(_modules())
    assert actual - listed == set(), f"modules missing from the README's layout section: {sorted(actual - listed)}"
    assert listed - actual == set(), f"the README's layout section lists modules that do not exist: {sorted(listed - actual)}"


def test_no_module_uses_another_modules_private_names():
    """No ``from x import _name``; a private module (``_download``) is imported only from its own folder."""
    problems = []
    for relative in _modules():
        path = PROJECT_ROOT / relative
        package = ".".join(Path(relative).parent.parts)  # e.g. dlmed.datasets
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                for index, part in enumerate(parts):
                    if part.startswith("_") and not part.startswith("__"):
                        owner = ".".join(parts[:index])
                        if owner != package:
                            problems.append(f"{relative}: imports {name}")
                        break
    assert problems == [], problems
