"""Checks a conda file that an environment refers to: it is an input of the stack, so it must be
there, inside the root, and be what it says (a YAML mapping with a `dependencies` list). Reads
the file; otherwise pure."""
from __future__ import annotations

import stat
from pathlib import Path

import yaml

MAX_CONDA_BYTES = 256 * 1024


def conda_file_problem(path: Path, root: Path) -> str | None:
    """Why `path` is no usable conda file (a phrase to follow the file's name), or None."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "is not there (paths are relative to the YAML file that names it)"
    if not resolved.is_relative_to(root.resolve()):
        return f"leads out of {root} (name a root above it: `--root DIR` or `root:` in the stack settings)"
    info = resolved.stat()
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONDA_BYTES:
        return "is not a regular file of at most 256 KiB"
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        return f"is not valid YAML ({str(error).splitlines()[0]})"
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        return "has no `dependencies:` list (a conda environment file names its packages there)"
    return None
