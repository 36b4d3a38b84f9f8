from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import Health


class GpuBase(SQLModel):
    uuid: str = Field(max_length=64, unique=True, description="NVIDIA UUID; the index can change, this cannot.")
    index: int = Field(description="The `gpu` label: position on the node.")
    model: str = Field(max_length=128)
    pci_bus_id: str | None = Field(default=None, max_length=32)
    memory_total_mib: float | None = Field(default=None, description="Used + free + reserved framebuffer.")
    mig_mode: bool = False
    utilization: float | None = Field(default=None, description="Latest utilisation, percent.")
    memory_used_mib: float | None = None
    power_watts: float | None = None
    temperature_c: float | None = None
    last_xid: int | None = Field(default=None, description="Last XID error code reported (0: none).")
    health: str = Field(default=Health.HEALTHY, max_length=16, index=True)
    first_seen: datetime = Field(sa_type=UtcDateTime)
    last_seen: datetime = Field(sa_type=UtcDateTime)


class Gpu(GpuBase, table=True):
    __tablename__ = "gpu"
    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True)


class GpuRead(GpuBase):
    id: int
    node_id: int
    node: str
    cluster_id: int
    cluster: str
    hub: str
    allocated_to: list[str] = Field(
        default_factory=list, description="Namespaces holding it or its slices now, of the projects the caller may see."
    )
    other_projects: int = Field(
        default=0,
        description="Further projects holding it or its slices now that the caller may not see: counted, never named.",
    )
