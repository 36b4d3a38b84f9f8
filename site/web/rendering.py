"""Templates: one route, two renderings (whole page, or the fragment an htmx request targets)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template import TemplateConfig
from markupsafe import Markup

from domain.pipeline.signals import kind_label
from domain.statuses import vocabulary_of


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-history-restore-request") != "true"


def render(
    request: Request[Any, Any, Any],
    template: str,
    context: dict[str, Any],
    *,
    fragments: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    """Render ``template``, or the fragment registered for the element an htmx request targets."""
    if fragments and is_htmx(request):
        template = fragments.get(request.headers.get("hx-target", ""), template)
    return Template(template_name=template, context=context, status_code=status_code)


def query_url(request: Request[Any, Any, Any], **changes: Any) -> str:
    """The current URL with some query parameters changed (None removes one); keeps links deep-linkable."""
    params = dict(request.query_params.items())
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return request.url.path + ("?" + urlencode(params) if params else "")


def badge(value: str | None) -> str:
    vocabulary = vocabulary_of(value or "")
    return "muted" if vocabulary is None else vocabulary.colour


def label(value: str | None) -> str:
    vocabulary = vocabulary_of(value or "")
    return (value or "—") if vocabulary is None else vocabulary.label


def number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def gib(mib: float | None) -> str:
    return "—" if mib is None else f"{mib / 1024:,.1f} GiB"


def ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    seconds = max((datetime.now(UTC) - moment).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def duration(seconds: float | None) -> str:
    """A length of time for people: ``42 s``, ``7 min 5 s``, ``3 h 12 min``, ``2 d 4 h``."""
    if seconds is None:
        return "—"
    whole = int(max(seconds, 0))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def timestamp(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
"""Unicode's bidirectional controls (LRM, RLM, ALM, LRE..RLO, LRI..PDI): in a label they reorder the text
around them on screen (an RLO makes ``gpu-job\u202egnp.exe`` read ``gpu-jobexe.png``), so text from
outside never carries them onto a page."""


_SHOW_BIDI = {code: f"[U+{code:04X}]" for code in BIDI_CONTROLS}


def neutralise_bidi(value: Any) -> Any:
    """Every ``{{ value }}`` passes here before autoescaping (Jinja's ``finalize``): bidirectional controls in
    text are shown as ``[U+202E]`` rather than obeyed. Markup (macros, the CSRF field) was built from
    values that passed here already."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return value.translate(_SHOW_BIDI)
    return value


def template_config(directory: Path) -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=FileSystemLoader(directory),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=neutralise_bidi,
    )
    environment.filters.update(badge=badge, label=label, number=number, gib=gib, ago=ago, timestamp=timestamp)
    environment.filters.update(kind=kind_label)
    environment.filters.update(duration=duration)
    environment.globals.update(query_url=query_url)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))
