"""The import contract, checked statically (an AST walk over reconciler/, every import at any
depth, lazy ones inside functions included):

  * the pure core (config, state, planning, render) imports no driver, no Docker SDK, no CLI;
  * no driver package imports another (reconciler.drivers.common is shared by all of them).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "reconciler"
PURE = ("reconciler.config", "reconciler.state", "reconciler.planning", "reconciler.render")
FORBIDDEN_IN_PURE = ("reconciler.drivers", "docker", "reconciler.cli")
SHARED_DRIVER_PACKAGES = {"common"}
# Front ends call these; they never call a front end.
BELOW_THE_CLI = ("reconciler.operations", "reconciler.apply", "reconciler.events", "reconciler.refresh",
                 "reconciler.drivers")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Every module `source` imports, relative imports resolved against `module`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found |= {f"{prefix}.{alias.name}" for alias in node.names}
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """module name -> (source, is package)  =>  "importer -> imported (rule)" lines."""
    found = []
    for module, (source, is_package) in sorted(modules.items()):
        imported = imports_of(source, module, is_package)
        if any(_within(module, pure) for pure in PURE):
            for name in sorted(imported):
                if any(_within(name, bad) for bad in FORBIDDEN_IN_PURE):
                    found.append(f"{module} -> {name} (the pure core imports no driver, docker or CLI)")
        if any(_within(module, below) for below in BELOW_THE_CLI):
            for name in sorted(imported):
                if _within(name, "reconciler.cli"):
                    found.append(f"{module} -> {name} (operations, the engine and drivers import no CLI)")
        parts = module.split(".")
        if parts[:2] == ["reconciler", "drivers"] and len(parts) > 2 and parts[2] not in SHARED_DRIVER_PACKAGES:
            own = parts[2]
            for name in sorted(imported):
                other = name.split(".")
                if other[:2] == ["reconciler", "drivers"] and len(other) > 2 and other[2] != own \
                        and other[2] not in SHARED_DRIVER_PACKAGES and (ROOT / "drivers" / other[2]).is_dir():
                    found.append(f"{module} -> {name} (a driver imports no other driver)")
    return found


def package_modules(root: Path) -> dict[str, tuple[str, bool]]:
    return {module_name(p, root): (p.read_text(), p.name == "__init__.py") for p in sorted(root.rglob("*.py"))}


def test_the_code_keeps_the_contract():
    modules = package_modules(ROOT)
    assert "reconciler.planning.planner" in modules and "reconciler.drivers.swarm.driver" in modules
    assert violations(modules) == []


def test_the_checker_catches_forbidden_imports_in_synthetic_modules():
    modules = {
        "reconciler.planning.bad": ("from reconciler.drivers.docker.fold import LOOPBACK\n", False),
        "reconciler.render.lazy": ("def f():\n    import docker\n", False),
        "reconciler.state.cli": ("from ..cli import main\n", False),
        "reconciler.config.ok": ("from reconciler.planning.diff import FieldChange\n", False),
        "reconciler.drivers.swarm.bad": ("from reconciler.drivers.docker.gateway import GATEWAY_IMAGE\n", False),
        "reconciler.operations.bad": ("def f():\n    from reconciler.cli.drivers import driver_named\n", False),
        "reconciler.drivers.swarm.relative": ("from ..docker import engine\n", False),
        "reconciler.drivers.swarm.fine": ("from reconciler.drivers.common.labels import LABEL_ROLE\n"
                                          "from reconciler.drivers.base import Driver\n", False),
    }
    assert violations(modules) == [
        "reconciler.drivers.swarm.bad -> reconciler.drivers.docker.gateway (a driver imports no other driver)",
        "reconciler.drivers.swarm.bad -> reconciler.drivers.docker.gateway.GATEWAY_IMAGE "
        "(a driver imports no other driver)",
        "reconciler.drivers.swarm.relative -> reconciler.drivers.docker (a driver imports no other driver)",
        "reconciler.drivers.swarm.relative -> reconciler.drivers.docker.engine (a driver imports no other driver)",
        "reconciler.operations.bad -> reconciler.cli.drivers (operations, the engine and drivers import no CLI)",
        "reconciler.operations.bad -> reconciler.cli.drivers.driver_named "
        "(operations, the engine and drivers import no CLI)",
        "reconciler.planning.bad -> reconciler.drivers.docker.fold (the pure core imports no driver, docker or CLI)",
        "reconciler.planning.bad -> reconciler.drivers.docker.fold.LOOPBACK "
        "(the pure core imports no driver, docker or CLI)",
        "reconciler.render.lazy -> docker (the pure core imports no driver, docker or CLI)",
        "reconciler.state.cli -> reconciler.cli (the pure core imports no driver, docker or CLI)",
        "reconciler.state.cli -> reconciler.cli.main (the pure core imports no driver, docker or CLI)",
    ]
