from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from litestar.openapi import ResponseSpec
from pydantic import BaseModel, Field

from domain.inventory import Page
from domain.inventory.usage import UsagePoint

T = TypeVar("T")


class Paged(BaseModel, Generic[T]):
    """One page of a list: ``items``, the ``total`` matching rows, and the ``limit``/``offset`` used."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)

    @classmethod
    def of(cls, page: Page[T]) -> Paged[T]:
        return cls(items=page.items, total=page.total, limit=page.limit, offset=page.offset)


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, description=description, media_type="application/problem+json")


ERRORS = {
    400: _problem("Invalid query: the detail names the parameter"),
    401: _problem("Missing, invalid or expired credentials"),
    404: _problem("No such resource, or not visible to the caller"),
    503: _problem("A dependency (database or authorization service) is unavailable; retry"),
}
"""The error responses every API route may give, documented once."""


class UsagePointRead(BaseModel):
    """One rollup bucket of usage. ``null`` is unknown (no reading), never zero."""

    bucket_start: datetime
    covered_seconds: float = Field(description="Seconds of the bucket the ledger has accounted for the subject.")
    partial: bool = Field(description="The bucket is not fully accounted: the current bucket, or one with a gap.")
    util_avg: float | None = Field(description="Average utilisation over the time it was known, %; null: unknown.")
    util_max: float | None = Field(description="Peak utilisation, %; null: unknown.")
    memory_mib: float | None = Field(description="Framebuffer in use (time-average, summed over GPUs); null: unknown.")
    power_watts: float | None = Field(description="Average draw summed over the GPUs; null: unknown.")
    temperature_max_c: float | None = Field(description="Hottest reading; null: no reading the caller may see.")
    gpus_allocated: float = Field(description="GPUs held on average over the covered part (slices as their share).")
    gpus_in_use: float | None = Field(description="GPUs allocated x utilisation; null when utilisation is unknown.")
    gpu_seconds_allocated: float
    gpu_seconds_idle: float = Field(description="Held with a known utilisation below the idle threshold.")
    gpu_seconds_util_unknown: float = Field(description="Held while utilisation was unknown: neither idle nor busy.")
    energy_wh: float

    @classmethod
    def of(cls, p: UsagePoint) -> UsagePointRead:
        return cls(
            bucket_start=p.bucket_start,
            covered_seconds=p.covered_seconds,
            partial=p.partial,
            util_avg=p.util_avg,
            util_max=p.util_max,
            memory_mib=p.memory_mib,
            power_watts=p.power_watts,
            temperature_max_c=p.temperature_max_c,
            gpus_allocated=p.gpus_allocated,
            gpus_in_use=p.gpus_in_use,
            gpu_seconds_allocated=p.gpu_seconds_allocated,
            gpu_seconds_idle=p.gpu_seconds_idle,
            gpu_seconds_util_unknown=p.gpu_seconds_util_unknown,
            energy_wh=p.energy_wh,
        )


class StatementTotalsRead(BaseModel):
    gpu_hours: float
    idle_gpu_hours: float
    unknown_util_gpu_hours: float
    energy_kwh: float
    cost: float | None = Field(description="Sum of the priced lines, rounded to the cent; null: nothing priced.")
    unpriced_gpu_hours: float = Field(description="GPU-hours without a price on the rate card (not in cost).")
    service_units: float | None


class StatementLineRead(BaseModel):
    model: str
    profile: str = Field(description="MIG profile, or whole.")
    gpu_hours: float
    idle_gpu_hours: float
    unknown_util_gpu_hours: float
    energy_kwh: float
    price_per_gpu_hour: float | None
    cost: float | None = Field(description="gpu_hours x price, rounded to the cent; null: unpriced.")
    service_units: float | None


class ProjectStatementRead(BaseModel):
    project_id: int
    hub: str
    cluster: str
    namespace: str
    gpu_quota: float | None
    lines: list[StatementLineRead]
    totals: StatementTotalsRead


class ReconciliationRead(BaseModel):
    hub: str | None = Field(description="The hub; null on the fleet line (all hubs listed).")
    projects_gpu_hours: float = Field(
        description="Every project on the hub(s), as one aggregate; when scoped, the reader's own projects."
    )
    unallocated_gpu_hours: float = Field(
        description="Held by no project; when scoped, also what every other project held (one figure, no names)."
    )
    unaccounted_gpu_hours: float
    capacity_gpu_hours: float
    difference_gpu_hours: float
    balanced: bool
    accounted_hours: float
    unaccounted_hours: float
    accounted_until: datetime | None
    scoped: bool = Field(description="True for a reader who does not read everything (see the two figures above).")
    line: str


class ReconciliationBlock(BaseModel):
    scope: str
    hubs: list[ReconciliationRead]
    fleet: ReconciliationRead


class ServiceUnitRead(BaseModel):
    name: str
    description: str
    units_per_gpu_hour: float


class StatementRead(BaseModel):
    """A monthly statement: per project, model and profile, with the fleet reconciliation."""

    month: str
    start: datetime
    end: datetime
    generated_at: datetime
    provisional: bool = Field(description="The month is not fully accounted yet.")
    currency: str | None = Field(description="The rate card's currency; null without a rate card.")
    service_unit: ServiceUnitRead | None
    projects: list[ProjectStatementRead]
    totals: StatementTotalsRead
    unpriced: list[str] = Field(description="Models and profiles the rate card has no price for.")
    reconciliation: ReconciliationBlock
