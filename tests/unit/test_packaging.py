"""What an installed wheel needs beside the modules is declared as package data: the JSON
Schemas every `validate` reads and the templates the renderers load. A file the code reads
from inside the package but that no package-data pattern covers is missing from `pip install .`."""
from __future__ import annotations

import tomllib
from pathlib import Path

import reconciler
from reconciler.config.validation import SCHEMA_DIR

PACKAGE = Path(reconciler.__file__).resolve().parent
PYPROJECT = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())


def packaged(path: Path) -> bool:
    """Whether a file under the package is covered by [tool.setuptools.package-data]."""
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        base = PACKAGE.parent.joinpath(*package.split("."))
        if path.is_relative_to(base) and any(path.relative_to(base).match(p) for p in patterns):
            return True
    return False


def test_the_schemas_live_in_the_package_and_are_package_data():
    assert SCHEMA_DIR.is_relative_to(PACKAGE), SCHEMA_DIR
    schemas = sorted(SCHEMA_DIR.glob("*.json"))
    assert len(schemas) >= 5
    assert [s.name for s in schemas if not packaged(s)] == []


def test_every_template_is_package_data():
    templates = sorted(PACKAGE.rglob("*.j2"))
    assert templates and [str(t.relative_to(PACKAGE)) for t in templates if not packaged(t)] == []
