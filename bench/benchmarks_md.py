"""Writes one section of BENCHMARKS.md: the benchmarks each own a `## ...` section and
replace it whole with the numbers of their latest run."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def replace_section(title: str, text: str, path: Path = BENCHMARKS) -> None:
    """`text` (which starts with `title`) in place of the section `title`, or appended."""
    current = path.read_text()
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    replacement = text.rstrip("\n") + "\n\n"
    updated = pattern.sub(lambda _: replacement, current) if pattern.search(current) else \
        current.rstrip() + "\n\n" + replacement
    path.write_text(updated.rstrip("\n") + "\n")


def publish(title: str, text: str, write: bool) -> None:
    """Print a benchmark's section and, unless told not to, put it into BENCHMARKS.md."""
    print(text)
    if write:
        replace_section(title, text)


def machine_summary(engine_version: str | None = None) -> str:
    """CPU count and model, Python, the Docker Engine's version when given, and the kernel."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    engine = f", Docker Engine {engine_version}" if engine_version else ""
    return (f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()} "
            f"({platform.python_implementation()}){engine}, {platform.system()} {platform.release()}")
