"""Azure ML instance types (VM SKUs) as CPU and memory sizes, for the local engine's limits. Pure.

A deployment's `instance_type` says how big each instance is on Azure ML; the docker driver
gives every container of the deployment that many CPUs (capped at what the engine has,
because Docker refuses more) and that much memory, unless `local.memory` says otherwise.
The figures are Azure's published vCPU / memory per VM size (the SKU table of the Azure ML
managed online endpoints documentation). An instance type not in this table (or none) sets
no CPU or memory limit; the pids limit applies to every container regardless.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class Size:
    cpus: float
    memory_gib: float

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)


# SKU -> vCPUs, memory GiB. Keep README.md ("Instance types") in step with this table.
INSTANCE_TYPES: dict[str, Size] = {
    "Standard_DS1_v2": Size(1, 3.5),
    "Standard_DS2_v2": Size(2, 7),
    "Standard_DS3_v2": Size(4, 14),
    "Standard_DS4_v2": Size(8, 28),
    "Standard_DS5_v2": Size(16, 56),
    "Standard_F2s_v2": Size(2, 4),
    "Standard_F4s_v2": Size(4, 8),
    "Standard_F8s_v2": Size(8, 16),
    "Standard_F16s_v2": Size(16, 32),
    "Standard_F32s_v2": Size(32, 64),
    "Standard_F48s_v2": Size(48, 96),
    "Standard_F64s_v2": Size(64, 128),
    "Standard_F72s_v2": Size(72, 144),
    "Standard_E2s_v3": Size(2, 16),
    "Standard_E4s_v3": Size(4, 32),
    "Standard_E8s_v3": Size(8, 64),
    "Standard_E16s_v3": Size(16, 128),
    "Standard_E32s_v3": Size(32, 256),
    "Standard_E48s_v3": Size(48, 384),
    "Standard_E64s_v3": Size(64, 432),
    "Standard_NC6s_v3": Size(6, 112),
    "Standard_NC12s_v3": Size(12, 224),
    "Standard_NC24s_v3": Size(24, 448),
}


def size_of(instance_type: str) -> Size | None:
    """The size of a SKU (Azure's names are case-insensitive), or None when not in the table."""
    wanted = (instance_type or "").lower()
    return next((size for name, size in INSTANCE_TYPES.items() if name.lower() == wanted), None)


def container_cpus(size: Size | None, engine_cpus: int) -> float | None:
    """CPUs for one container: the SKU's, at most what the engine has."""
    if size is None:
        return None
    return min(size.cpus, float(engine_cpus)) if engine_cpus > 0 else size.cpus
