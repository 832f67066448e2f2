"""Benchmark: start-up and the model fingerprint cache (issue 16), side by side in one run.

  * start-up: `reconciler --help` and `reconciler validate stacks/half-plus-two`, each with the
    package's bytecode compiled first (`python -m compileall reconciler`: what an installed
    wheel has, since pip compiles it, and what scripts/setup.sh now does for the editable
    install) and from source (a copy of the package without bytecode: with
    PYTHONDONTWRITEBYTECODE=1, as this machine sets it, an editable install without compiled
    bytecode compiles every module of the package at every start), against two floors: `python3 -S -c pass` (the interpreter
    alone) and `python3 -c pass` (with site-packages and this machine's .pth files: the
    editable finder, and a sandbox .pth that imports certifi at every start), and a third:
    `python3 -c 'import click, yaml, jsonschema_rs'`, the three dependencies `validate` cannot
    do without (its CLI, its YAML parser, its schema check), imported and nothing else. Also as a user
    installs it: `pip install` of this checkout (a wheel, compiled by pip, with its
    dependencies) into a fresh venv, whose interpreter loads neither .pth (skip with
    --no-venv: it needs the package index and ~30 s). Each run --repeat times, interleaved (one
    of each per round), medians reported. Target: --help and validate under 0.1 s; also stated
    over `python3 -c pass`.
  * a 1 GiB model: `reconciler plan --no-refresh` of the demo stack with a 1 GiB file added to
    its model, against the same plan without it, interleaved, after one warm-up plan that fills
    the fingerprint cache. Target: at most +0.05 s.

    python bench/bench_startup.py [--repeat 15] [--model-mib 1024] [--no-venv] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks_md import publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Start-up and the model fingerprint cache (issue 16)"
RECONCILER = [sys.executable, "-m", "reconciler"]
DEPENDENCIES = "import click, yaml, jsonschema_rs"  # what validate imports that is not ours
DEPENDENCIES_ROW = f"python3 -c '{DEPENDENCIES}'"


def timed(argv: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, (argv, result.stderr.decode()[-500:])
    return elapsed


def interleaved(commands: dict[str, list[str]], rounds: int, cwd: Path, env: dict,
                variants: dict[str, tuple[list[str], Path, dict]] | None = None) -> dict[str, float]:
    """Median wall time of each command (and each `variants` entry: argv, cwd, env of its own),
    one of each per round."""
    runs = {name: (argv, cwd, env) for name, argv in commands.items()} | (variants or {})
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (argv, where, environment) in runs.items():
            samples[name].append(timed(argv, where, environment))
    return {name: statistics.median(values) for name, values in samples.items()}


def compile_package() -> None:
    """The package's bytecode next to its sources, as scripts/setup.sh compiles it (and as pip
    compiles an installed wheel): what a user's every command starts from."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler")], check=True,
                   capture_output=True)


def installed_venv(directory: Path) -> Path:
    """A fresh venv with this checkout installed as a user installs it (`pip install .`: a
    wheel, compiled by pip, and the dependencies from the configured index); its python."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, capture_output=True)
    python = directory / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]
    return python


def dependency_floor(startup: dict[str, float], installed: dict[str, float]) -> str:
    """What the import of validate's three dependencies alone leaves of the 0.1 s."""
    text = f" Importing `click`, `yaml` and `jsonschema_rs` alone takes {startup[DEPENDENCIES_ROW]:.3f} s here"
    if DEPENDENCIES_ROW in installed:
        text += f" and {installed[DEPENDENCIES_ROW]:.3f} s in the venv"
    floor = installed.get(DEPENDENCIES_ROW, startup[DEPENDENCIES_ROW])  # as a user installs it, when measured
    return text + (": the whole 0.1 s, before a line of reconciler runs." if floor >= 0.1 else
                   f": {0.1 - floor:.3f} s of the 0.1 s is left for reconciler's own imports and work.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--model-mib", type=int, default=1024)
    parser.add_argument("--no-venv", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        env = {**os.environ, "RECONCILER_CACHE_DIR": str(scratch / "cache")}
        # From source: a copy of the package without bytecode, run from its own folder (`-m`
        # puts the working directory first on sys.path).
        source_root = scratch / "source"
        shutil.copytree(ROOT / "reconciler", source_root / "reconciler",
                        ignore=shutil.ignore_patterns("__pycache__"))
        source_env = {**env, "PYTHONPATH": str(source_root)}
        compile_package()
        help_, validate = ["--help"], ["validate", str(ROOT / "stacks" / "half-plus-two")]
        venv: dict[str, tuple[list[str], Path, dict]] = {}
        if not args.no_venv:
            python = str(installed_venv(scratch / "venv"))
            venv = {"venv -c pass": ([python, "-c", "pass"], scratch, env),
                    "venv dependencies": ([python, "-c", DEPENDENCIES], scratch, env),
                    "venv --help": ([python, "-m", "reconciler", *help_], scratch, env),
                    "venv validate": ([python, "-m", "reconciler", *validate], scratch, env)}
        measured = interleaved({
            "python3 -S -c pass": [sys.executable, "-S", "-c", "pass"],
            "python3 -c pass": [sys.executable, "-c", "pass"],
            DEPENDENCIES_ROW: [sys.executable, "-c", DEPENDENCIES],
            "reconciler --help": [*RECONCILER, *help_],
            "reconciler validate stacks/half-plus-two": [*RECONCILER, *validate],
        }, args.repeat, ROOT, env, variants={
            "source --help": ([*RECONCILER, *help_], source_root, source_env),
            "source validate": ([*RECONCILER, *validate], source_root, source_env), **venv})
        from_source = {"reconciler --help": measured.pop("source --help"),
                       "reconciler validate stacks/half-plus-two": measured.pop("source validate")}
        installed = {name: measured.pop(f"venv {argv}") for name, argv in (
            ("python3 -c pass", "-c pass"), (DEPENDENCIES_ROW, "dependencies"), ("reconciler --help", "--help"),
            ("reconciler validate stacks/half-plus-two", "validate")) if f"venv {argv}" in measured}
        startup = measured
        small = scratch / "small" / "half-plus-two"
        big = scratch / "big" / "half-plus-two"
        shutil.copytree(ROOT / "stacks" / "half-plus-two", small)
        shutil.copytree(ROOT / "stacks" / "half-plus-two", big)
        with open(big / "half_plus_two" / "00000123" / "assets" / "weights.bin", "wb") as handle:
            chunk = os.urandom(1 << 20)
            for _ in range(args.model_mib):
                handle.write(chunk)
        old = time.time() - 60  # outside the cache's racy window, as a model that was not just written
        os.utime(big / "half_plus_two" / "00000123" / "assets" / "weights.bin", (old, old))
        plan = lambda stack: [*RECONCILER, "plan", str(stack), "--no-refresh", "--state",  # noqa: E731
                              str(stack.parent / "state.json")]
        cold = timed(plan(big), ROOT, env)  # hashes the gigabyte once and caches the digest
        plans = interleaved({"plan without the big file": plan(small), "plan with a 1 GiB model": plan(big)},
                            args.repeat, ROOT, env)
    empty = startup["python3 -c pass"]
    lines = [SECTION, "",
             f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python bench/bench_startup.py` "
             f"(medians of {args.repeat} interleaved runs, wall time of the whole process; load average "
             f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} at the end). Compiled: the package's bytecode "
             "compiled first (as an installed wheel has it; scripts/setup.sh compiles the editable install); "
             "from source: a copy of the package without bytecode, PYTHONDONTWRITEBYTECODE=1 as set here; "
             "installed: `pip install` of this checkout into a fresh venv (a wheel, compiled by pip, with its "
             "dependencies), whose interpreter loads neither this machine's editable finder nor its sandbox "
             "certifi .pth.", "",
             "| command | compiled (s) | over `python3 -c pass` (s) | from source (s) | installed in a venv (s) |",
             "|---|---:|---:|---:|---:|"]
    for name, seconds in startup.items():
        source = f"{from_source[name]:.3f}" if name in from_source else ""
        venv_time = f"{installed[name]:.3f}" if name in installed else ""
        lines.append(f"| `{name}` | {seconds:.3f} | {seconds - empty:+.3f} | {source} | {venv_time} |")
    overhead = plans["plan with a 1 GiB model"] - plans["plan without the big file"]
    lines += ["", f"Targets: `--help` {startup['reconciler --help']:.3f} s and `validate` "
              f"{startup['reconciler validate stacks/half-plus-two']:.3f} s, under 0.1 s: "
              + ("PASS" if max(startup["reconciler --help"],
                               startup["reconciler validate stacks/half-plus-two"]) < 0.1 else "FAIL")
              + f" (`python3 -c pass` takes {empty:.3f} s here, `python3 -S -c pass` "
              f"{startup['python3 -S -c pass']:.3f} s); over `python3 -c pass`: `--help` "
              f"{startup['reconciler --help'] - empty:+.3f} s, `validate` "
              f"{startup['reconciler validate stacks/half-plus-two'] - empty:+.3f} s."
              + (f" Installed in a venv: `--help` {installed['reconciler --help']:.3f} s and `validate` "
                 f"{installed['reconciler validate stacks/half-plus-two']:.3f} s: "
                 + ("PASS" if max(installed["reconciler --help"],
                                  installed["reconciler validate stacks/half-plus-two"]) < 0.1 else "FAIL")
                 + f" (its `python -c pass` {installed['python3 -c pass']:.3f} s)." if installed else "")
              + dependency_floor(startup, installed), "",
              "| no-op plan, --no-refresh | median (s) |", "|---|---:|"]
    for name, seconds in plans.items():
        lines.append(f"| {name} | {seconds:.3f} |")
    lines += [f"| first plan with the 1 GiB model (hashes it, fills the cache) | {cold:.3f} |", "",
              f"Target: at most +0.05 s with the 1 GiB model: {overhead:+.3f} s, "
              + ("PASS" if overhead <= 0.05 else "FAIL") + "."]
    text = "\n".join(lines) + "\n"
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
