"""What every settings section shares: the prefix, the project root, the error they raise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

PREFIX = "AI_TELEMETRY_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
Port = Annotated[int, Field(ge=1, le=65535)]


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it."""


def section_config(prefix: str) -> SettingsConfigDict:
    """One section's variables: ``AI_TELEMETRY_<prefix><FIELD>``; unknown ones ignored; frozen."""
    return SettingsConfigDict(env_prefix=f"{PREFIX}{prefix}", extra="ignore", frozen=True)
