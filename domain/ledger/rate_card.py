"""The rate card: what a GPU-hour costs, per GPU model and MIG profile, in one currency.

A TOML file named by ``AI_TELEMETRY_STATEMENTS_RATE_CARD`` (or ``ai-telemetry ledger --rate-card``)::

    currency = "EUR"
    default_price_per_gpu_hour = 1.50        # optional: models the card does not list

    [service_unit]                            # optional
    name = "GPU SU"
    description = "1 GPU + its share of the node (CPU, memory, local disk)"
    units_per_gpu_hour = 1.0

    [[rates]]
    model = "NVIDIA A100-SXM4-80GB"           # as the GPU reports it (modelName)
    price_per_gpu_hour = 2.40

    [[rates]]
    model = "NVIDIA A100-SXM4-80GB"
    profile = "1g.10gb"                       # a MIG profile: its own price per GPU-hour
    price_per_gpu_hour = 2.10

Prices are per **GPU-hour of the ledger**: a MIG slice is charged for its share of the GPU (a
``3g.40gb`` slice of an A100 held for an hour is 3/7 GPU-hour), at its profile's price when the
card lists one, else at its model's. A GPU-hour whose model has no price and no default is
*unpriced*: its cost is unknown (None) and the statement says so, never 0.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator

WHOLE = "whole"
"""The profile of a whole (non-MIG) GPU in statements, rates and ledger counters."""


class RateCardError(Exception):
    """The rate card cannot be read or is invalid; the message names the file and the key."""


class Rate(BaseModel):
    """The price of one GPU-hour of a model, or of a MIG profile of that model."""

    model_config = {"extra": "forbid", "frozen": True}

    model: str = Field(min_length=1, max_length=128, description="GPU model as reported, e.g. NVIDIA L40S.")
    profile: str = Field(
        default=WHOLE,
        pattern=r"^(whole|\d+(c\.\d+)?g\.\d+gb(\+[a-z]+)?)$",
        description="A MIG profile such as 1g.10gb, or whole (the default) for the model's whole GPUs and "
        "the profiles the card does not list.",
    )
    price_per_gpu_hour: float = Field(
        ge=0, allow_inf_nan=False, description="Price of one GPU-hour, in the card's currency."
    )


class ServiceUnit(BaseModel):
    """A billing unit defined on top of GPU-hours, e.g. "1 GPU + its share of the node"."""

    model_config = {"extra": "forbid", "frozen": True}

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    units_per_gpu_hour: float = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="Service units one GPU-hour makes."
    )


class RateCard(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}

    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR or USD.")
    default_price_per_gpu_hour: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Price of the models the card does not list (unset: they are unpriced).",
    )
    service_unit: ServiceUnit | None = None
    rates: tuple[Rate, ...] = ()

    @model_validator(mode="after")
    def _one_price_each(self) -> RateCard:
        keys = [(r.model, r.profile) for r in self.rates]
        twice = sorted({f"{m} {p}" for m, p in keys if keys.count((m, p)) > 1})
        if twice:
            raise ValueError(f"priced more than once: {', '.join(twice)}")
        return self

    def price(self, model: str, profile: str) -> float | None:
        """Price per GPU-hour of ``model`` (a MIG ``profile`` or whole); None when the card has none."""
        prices = {(r.model, r.profile): r.price_per_gpu_hour for r in self.rates}
        for key in ((model, profile), (model, WHOLE)):
            if key in prices:
                return prices[key]
        return self.default_price_per_gpu_hour

    def service_units(self, gpu_hours: float) -> float | None:
        return None if self.service_unit is None else gpu_hours * self.service_unit.units_per_gpu_hour


def parse_rate_card(text: str, *, origin: str) -> RateCard:
    """Validate a rate card's TOML text; ``origin`` names it in errors. Raises :class:`RateCardError`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RateCardError(f"{origin} is not valid TOML: {exc}") from None
    except RecursionError:
        raise RateCardError(f"{origin} is nested too deeply to be a rate card") from None
    try:
        return RateCard.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(top level)"
            problems.append(f"{where}: {item['msg']}")
        raise RateCardError(f"{origin}: " + "; ".join(problems)) from None


def load_rate_card(path: Path) -> RateCard:
    """Read and validate the rate card at ``path``. Raises :class:`RateCardError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RateCardError(f"file not found: {path}") from None
    except OSError as exc:
        raise RateCardError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise RateCardError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_rate_card(text, origin=str(path))
