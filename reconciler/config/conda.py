"""Conda files: checks one an environment refers to (it is an input of the stack, so it must be
there, inside the root, and be what it says: a YAML mapping with a `dependencies` list), and
translates it for images without conda. Reads the file; otherwise pure.

An image without conda (every base image here: no conda channel is reachable) gets the `pip:`
section plus the conda packages that have a PyPI namesake, installed with pip. The tables below
say which conda names differ on PyPI, which packages exist only on conda channels (refused at
validate: pip cannot install them), and which are left out (the interpreter and pip themselves:
the image's are used, and the requested Python is compared with the image's at build time).
"""
from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MAX_CONDA_BYTES = 256 * 1024

# conda name -> PyPI name, where they differ. Every other conda package is installed under its
# own name.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "py-lightgbm": "lightgbm",
    "msgpack-python": "msgpack",
    "matplotlib-base": "matplotlib",
    "pytables": "tables",
    "py-opencv": "opencv-python",
    "opencv": "opencv-python",
    "pyqt": "PyQt5",
    "tensorflow-base": "tensorflow",
    "pillow-simd": "pillow",
    "python-graphviz": "graphviz",
    "pyarrow-core": "pyarrow",
    "arrow-cpp": "pyarrow",
}
# Not on PyPI under that name (C/C++ libraries, CUDA, conda's own plumbing): pip cannot install
# them. MKL has a PyPI wheel, but not the one numpy and scipy from PyPI link against.
CONDA_ONLY = frozenset({
    "cudatoolkit", "cudnn", "cuda-toolkit", "cuda-nvcc", "cuda-runtime", "nccl", "magma",
    "mkl", "mkl-service", "mkl_fft", "mkl_random", "mkl-include", "intel-openmp", "blas", "libblas",
    "libcblas", "liblapack", "openblas", "libopenblas",
    "libgcc", "libgcc-ng", "libstdcxx-ng", "libgomp", "_libgcc_mutex", "_openmp_mutex", "ld_impl_linux-64",
    "libffi", "openssl", "ca-certificates", "ncurses", "readline", "sqlite", "tk", "xz", "zlib", "bzip2",
    "libuuid", "libzlib", "libedit", "gcc", "gxx", "gcc_linux-64", "gxx_linux-64", "make", "cmake-binary",
    "conda", "mamba", "libmamba", "nodejs", "openjdk", "r-base",
})
# The image's own interpreter and pip are used.
SKIPPED = frozenset({"python", "pip"})


@dataclass(frozen=True)
class CondaPackage:
    spec: str       # as written: "numpy=2.3.1"
    name: str       # conda name, channel prefix stripped: "numpy"
    line: int


@dataclass(frozen=True)
class CondaFile:
    """What a conda file asks for: the Python version (None: any), its conda packages and its
    pip requirements, each with its line in the file."""
    python: str | None
    packages: tuple[CondaPackage, ...]
    pip: tuple[tuple[str, int], ...] = ()
    name: str = ""
    problems: tuple[tuple[int, str], ...] = field(default=())


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


def parse_conda(text: str) -> CondaFile:
    """The packages of a conda file (already checked by conda_file_problem), with their lines."""
    root = yaml.compose(text)
    python, packages, pip, problems, name = None, [], [], [], ""
    for key, value in root.value:
        if key.value == "name" and isinstance(value, yaml.ScalarNode):
            name = str(value.value)
        if key.value != "dependencies" or not isinstance(value, yaml.SequenceNode):
            continue
        for item in value.value:
            line = item.start_mark.line + 1
            if isinstance(item, yaml.ScalarNode):
                spec = str(item.value).strip()
                package = CondaPackage(spec, _conda_name(spec), line)
                if package.name == "python":
                    python = _python_version(spec)
                packages.append(package)
            elif isinstance(item, yaml.MappingNode):
                for pip_key, pip_value in item.value:
                    if pip_key.value != "pip" or not isinstance(pip_value, yaml.SequenceNode):
                        problems.append((line, f"dependency {pip_key.value!r} is not a package (only `pip:` "
                                               "lists are)"))
                        continue
                    pip += [(str(p.value).strip(), p.start_mark.line + 1) for p in pip_value.value
                            if isinstance(p, yaml.ScalarNode)]
            else:
                problems.append((line, "a dependency is neither a package nor a `pip:` list"))
    return CondaFile(python, tuple(packages), tuple(pip), name, tuple(problems))


def _conda_name(spec: str) -> str:
    """`conda-forge::numpy=2.3.1=py312h_0` -> numpy."""
    body = spec.split("::", 1)[-1].strip()
    return re.split(r"[\s=<>!~\[]", body, maxsplit=1)[0].lower()


def _python_version(spec: str) -> str | None:
    match = re.search(r"python\s*[=<>~!]*=?\s*([0-9][0-9.*]*)", spec.split("::", 1)[-1])
    return match.group(1).rstrip(".*") if match else None


def conda_only(conda: CondaFile) -> list[CondaPackage]:
    """The packages pip cannot install (not on PyPI under that name)."""
    return [p for p in conda.packages if p.name in CONDA_ONLY]


def pip_requirement(package: CondaPackage) -> str | None:
    """A conda match spec as a pip requirement (None: skipped). `numpy=2.3.1` -> `numpy==2.3.1`,
    `numpy=2.3` (conda: any 2.3.x) -> `numpy==2.3.*`, `numpy>=1.2,<2` stays, a build string
    (`=py312h_0`) is dropped."""
    if package.name in SKIPPED or package.name in CONDA_ONLY:
        return None
    name = CONDA_TO_PYPI.get(package.name, package.name)
    body = package.spec.split("::", 1)[-1].strip()
    rest = body[len(package.name):].strip() if body.lower().startswith(package.name) else ""
    extras = ""
    if rest.startswith("["):
        extras, _, rest = rest.partition("]")
        extras += "]"
        rest = rest.strip()
    if not rest:
        return name + extras
    if rest[0] not in "=<>!~":
        rest = "=" + rest.split()[0]  # `numpy 2.3.1`: conda's space form of `=`
    if rest.startswith("=="):
        constraint = "==" + rest[2:].split("=", 1)[0]
    elif rest[0] in "<>!~":
        constraint = rest
    else:
        constraint = _fuzzy(rest[1:].split("=", 1)[0])  # a build string after a second `=` is dropped
    return name + extras + constraint.replace(" ", "")


def _fuzzy(version: str) -> str:
    """conda's `=V` matches V and every V.x; a full three-part version is as exact as pip's ==."""
    if version.endswith("*"):
        return "==" + version
    return "==" + version if version.count(".") >= 2 else f"=={version}.*"


# The first release of each package whose wheels work with numpy 2. conda-forge's builds of
# older releases pin numpy<2 (their run_exports), which conda honours; their PyPI wheels declare
# no upper bound, so pip would pair them with numpy 2 and the import fails ("numpy.dtype size
# changed"). Azure ML's inference-schema example (scikit-learn=1.2.2, numpy unpinned) is one.
NUMPY2_ABI_SINCE = {"scikit-learn": (1, 4, 2), "scipy": (1, 13, 0), "pandas": (2, 2, 2)}


def _pinned_version(requirement: str, name: str) -> tuple[int, ...] | None:
    match = re.fullmatch(re.escape(name) + r"==(\d+(?:\.\d+)*)(?:\.\*)?", requirement)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def numpy_abi_bound(requirements: list[str]) -> list[str]:
    """`numpy<2` when a pinned package predates numpy 2 and the conda file does not pin numpy."""
    if any(r.startswith("numpy") and r[5:6] in ("", "=", "<", ">", "!", "~", "[") and r != "numpy"
           for r in requirements):
        return []
    for name, since in NUMPY2_ABI_SINCE.items():
        version = next((v for r in requirements if (v := _pinned_version(r, name))), None)
        if version is not None and version < since:
            return ["numpy<2"]
    return []


def conda_requirements(conda: CondaFile) -> list[str]:
    """The conda packages with a PyPI namesake, as pip requirements (with the numpy bound conda
    would have applied to packages built before numpy 2)."""
    found = [r for r in map(pip_requirement, conda.packages) if r]
    bound = numpy_abi_bound(found)
    return [r for r in found if not (bound and r == "numpy")] + bound


def requirements(conda: CondaFile) -> list[str]:
    """What pip installs for a conda file in an image without conda: the conda packages with a
    PyPI namesake, then the pip section as written."""
    return conda_requirements(conda) + [spec for spec, _ in conda.pip]
