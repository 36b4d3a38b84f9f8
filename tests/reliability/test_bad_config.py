"""Bad configuration: generated TOML sources files, arbitrary bytes and environment values for every setting.

``load_settings`` either returns settings or raises :class:`SettingsError` naming the offending setting;
no other exception ever leaves it, and the real CLI turns bad configuration into one line on stderr.
The settings fields are read from the settings classes, so a new field is fuzzed without touching this file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic_settings import BaseSettings

from domain.settings import PREFIX, Settings, SettingsError, SourceSettings, load_settings

AREA = "Bad input"
SECTIONS: dict[str, type[BaseSettings]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)
}
ENV_VARS = sorted(
    f"{section.model_config['env_prefix']}{field.upper()}"
    for section in SECTIONS.values()
    for field in section.model_fields
)
SOURCE_FIELDS = sorted(SourceSettings.model_fields)
FUZZ = settings(
    deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
CLI = [sys.executable, "-m", "ai_telemetry.cli"]


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with no AI_TELEMETRY_* variable but ``values``, restored afterwards."""
    saved = {name: value for name, value in os.environ.items() if name.startswith(PREFIX)}
    for name in saved:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        for name in values:
            os.environ.pop(name, None)
        os.environ.update(saved)


def outcome(**kwargs: Any) -> Settings | SettingsError:
    """What load_settings gives: settings or the SettingsError; any other exception fails the test."""
    try:
        return load_settings(**kwargs)
    except SettingsError as exc:
        return exc


# --- values ---------------------------------------------------------------------------------------

env_characters = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")  # what an environment holds
nasty_strings = st.sampled_from(
    [
        "",
        " ",
        "-1",
        "0",
        "1e400",
        "-1e400",
        "nan",
        "inf",
        "-inf",
        "true",
        "no",
        "[1]",
        "{}",
        '{"a": 1}',
        "null",
        "None",
        "99999999999999999999999999",
        "0x10",
        "\uff11\uff12",
        "٣",
        "1_000",
        "http://",
        "sqlite:",
        "postgresql://",
        "{trace_id}",
        "é" * 10,
        "\u202e",
        "x" * 100_000,
    ]
)
env_values = st.one_of(
    nasty_strings,
    st.text(alphabet=env_characters, max_size=40),
    st.integers().map(str),
    st.floats().map(str),
)


def toml_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:  # noqa: PLR0911  (one case per TOML type)
    """A TOML literal (strings through JSON escaping, which TOML's basic strings mostly share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**80),  # beyond TOML's 64-bit integers: not TOML at all
    st.floats(),
    st.text(alphabet=env_characters, max_size=30),
    nasty_strings,
    st.datetimes(timezones=st.just(UTC)),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
VALID_SOURCE: dict[str, Any] = {"name": "prod", "url": "http://prometheus.example:9090", "cluster": "moc-prod"}


@st.composite
def sources_documents(draw: st.DrawFn) -> tuple[str, str | None]:
    """(TOML text, the key changed from a valid document or None) for a sources file."""
    sources = [dict(VALID_SOURCE, name=f"s{i}") for i in range(draw(st.integers(min_value=1, max_value=3)))]
    top: dict[str, Any] = {}
    changed: str | None = None
    kind = draw(st.sampled_from(["source-field", "unknown-source-key", "unknown-top-key", "many"]))
    target = draw(st.sampled_from(sources))
    if kind == "source-field":
        changed = draw(st.sampled_from(SOURCE_FIELDS))
        if draw(st.booleans()):
            target.pop(changed, None)
        else:
            target[changed] = draw(toml_values)
    elif kind == "unknown-source-key":
        changed = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in SOURCE_FIELDS))
        target[changed] = draw(toml_values)
    elif kind == "unknown-top-key":
        changed = draw(st.text(min_size=1, max_size=12).filter(lambda k: k != "sources"))
        top[changed] = draw(toml_values)
    else:  # several fields of several sources at once: only "some error, named as the file" is checked
        for source in sources:
            for key in draw(st.lists(st.sampled_from(SOURCE_FIELDS), max_size=4)):
                source[key] = draw(toml_values)
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in top.items()]
    for source in sources:
        lines.append("[[sources]]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in source.items()]
    return "\n".join(lines) + "\n", changed


raw_documents = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=200).map(lambda b: b'[[sources]]\nname = "x"\n' + b),
    st.sampled_from(
        [
            b"\xff\xfe[[sources]]",
            b"a = " + b"[" * 5000 + b"]" * 5000,
            b"[[sources]]\n" * 3,
            b"sources = 1",
            b"sources = [1, 2]",
            b"sources = {}",
            '[[sources]]\nname = "\u00e9"'.encode("utf-16"),
        ]
    ),
)


# --- tests ----------------------------------------------------------------------------------------


def test_every_setting_has_an_environment_variable_to_fuzz() -> None:
    assert len(SECTIONS) >= 9 and "AI_TELEMETRY_DATABASE_URL" in ENV_VARS and "AI_TELEMETRY_SITE_PORT" in ENV_VARS
    assert len(ENV_VARS) == sum(len(section.model_fields) for section in SECTIONS.values())


ENV_EXAMPLES = 300


@given(values=st.dictionaries(st.sampled_from(ENV_VARS), env_values, min_size=1, max_size=3))
@settings(FUZZ, max_examples=ENV_EXAMPLES)
@example(values={"AI_TELEMETRY_NOTIFY_SMTP_TIMEOUT_SECONDS": "99999999999999999999999999"})  # a cross-field check
def _environment_values(values: dict[str, str], seen: dict[str, int]) -> None:
    with environment(values):
        result = outcome()
    if isinstance(result, SettingsError):
        seen["rejected"] += 1
        assert any(name in str(result) for name in values), (values, str(result))
        assert "\n" not in str(result)
    else:
        seen["accepted"] += 1


def test_environment_values_for_every_setting_load_or_name_the_variable(reliability) -> None:  # type: ignore[no-untyped-def]
    seen = {"accepted": 0, "rejected": 0}
    _environment_values(seen=seen)
    assert seen["rejected"] > 0 and seen["accepted"] > 0
    reliability.record(
        area=AREA,
        tried=f"load_settings with generated values (wrong types, huge, unicode, out of range) for 1-3 of all "
        f"{len(ENV_VARS)} AI_TELEMETRY_* variables",
        held="every result was Settings or a one-line SettingsError naming a variable that was set; no other exception",
        variables=len(ENV_VARS),
        examples=sum(seen.values()),
        rejected=seen["rejected"],
        accepted=seen["accepted"],
    )


TOML_EXAMPLES = 300


@given(document=sources_documents())
@settings(FUZZ, max_examples=TOML_EXAMPLES)
def _sources_documents(tmp_path: Path, document: tuple[str, str | None], seen: dict[str, int]) -> None:
    text, changed = document
    path = tmp_path / "sources.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with environment({}):
        result = outcome(config_path=path)
    if not isinstance(result, SettingsError):
        seen["accepted"] += 1
        return
    seen["rejected"] += 1
    message = str(result)
    assert message.startswith(f"{PREFIX}CONFIG: ") and str(path) in message, message
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # named as not TOML
    if changed is not None:  # one key changed in a valid file: the message names it
        assert changed in message or json.dumps(changed)[1:-1] in message, (changed, message)


def test_generated_sources_files_load_or_name_the_key(tmp_path: Path, reliability) -> None:  # type: ignore[no-untyped-def]
    seen = {"accepted": 0, "rejected": 0}
    _sources_documents(tmp_path=tmp_path, seen=seen)
    assert seen["rejected"] > 0 and seen["accepted"] > 0
    reliability.record(
        area=AREA,
        tried=f"load_settings with generated TOML sources files: each of the {len(SOURCE_FIELDS)} source keys "
        "missing or given wrong types, huge or unicode values, unknown keys, several sources",
        held="every file loaded or raised a one-line SettingsError naming AI_TELEMETRY_CONFIG, the file and the key",
        examples=sum(seen.values()),
        rejected=seen["rejected"],
        accepted=seen["accepted"],
    )


@given(raw=raw_documents)
@settings(FUZZ, max_examples=150)
def _raw_documents(tmp_path: Path, raw: bytes, seen: dict[str, int]) -> None:
    path = tmp_path / "sources.toml"
    path.write_bytes(raw)
    with environment({}):
        result = outcome(config_path=path)
    seen["rejected" if isinstance(result, SettingsError) else "accepted"] += 1
    if isinstance(result, SettingsError):
        assert str(result).startswith(f"{PREFIX}CONFIG: "), str(result)


def test_arbitrary_bytes_as_the_sources_file_are_a_settings_error(tmp_path: Path, reliability) -> None:  # type: ignore[no-untyped-def]
    seen = {"accepted": 0, "rejected": 0}
    _raw_documents(tmp_path=tmp_path, seen=seen)
    for unreadable in (tmp_path, tmp_path / "missing.toml"):  # a directory, a missing file
        with environment({}):
            result = outcome(config_path=unreadable)
        assert isinstance(result, SettingsError) and str(unreadable) in str(result)
    reliability.record(
        area=AREA,
        tried="arbitrary bytes, invalid UTF-8, UTF-16, 5,000-deep nested arrays, a directory and a missing file "
        "as the sources file",
        held="each raised SettingsError naming AI_TELEMETRY_CONFIG (before the fix: UnicodeDecodeError, "
        "RecursionError, IsADirectoryError escaped)",
        examples=sum(seen.values()) + 2,
        rejected=seen["rejected"] + 2,
    )


def run_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    clean[f"{PREFIX}DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    clean.update(env)
    return subprocess.run([*CLI, *args], env=clean, capture_output=True, text=True, timeout=120, check=False)


def test_the_cli_reports_bad_configuration_in_one_line(tmp_path: Path, reliability) -> None:  # type: ignore[no-untyped-def]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00[[sources]]")
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[[sources]]\nname = "p"\nurl = "ftp://x"\ncluster = 7\n')
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["db", "upgrade", "--config", str(binary)], {}, "AI_TELEMETRY_CONFIG"),
        (["worker", "--config", str(deep)], {}, "AI_TELEMETRY_CONFIG"),
        (["worker", "--config", str(tmp_path)], {}, "AI_TELEMETRY_CONFIG"),
        (["worker", "--config", str(wrong)], {}, "sources.0.cluster"),
        (["site"], {f"{PREFIX}SITE_PORT": "[1]", f"{PREFIX}SITE_SESSION_SECRET": "s" * 40}, "AI_TELEMETRY_SITE_PORT"),
        (["db", "upgrade"], {f"{PREFIX}DATABASE_POOL_SIZE": "1e400"}, "AI_TELEMETRY_DATABASE_POOL_SIZE"),
        (
            ["site"],
            {f"{PREFIX}HTTP_REQUEST_TIMEOUT_SECONDS": "0", f"{PREFIX}SITE_SESSION_SECRET": "s" * 40},
            "AI_TELEMETRY_HTTP_REQUEST_TIMEOUT_SECONDS",
        ),
        (
            ["site"],
            {
                f"{PREFIX}AUTH_MODE": "keycloak",
                f"{PREFIX}KEYCLOAK_URL": "127.0.0.1:18080",  # no scheme: once accepted, then /login failed
                f"{PREFIX}KEYCLOAK_CLIENT_SECRET": "secret",
                f"{PREFIX}SITE_SESSION_SECRET": "s" * 40,
            },
            "AI_TELEMETRY_KEYCLOAK_URL",
        ),
        (
            ["db", "upgrade"],
            {f"{PREFIX}DATABASE_URL": "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"},
            "AI_TELEMETRY_DATABASE_URL",
        ),
    ]
    for args, env, named in cases:
        result = run_cli(args, tmp_path, **env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode in (1, 2), (args, result.returncode, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (args, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("ai-telemetry: ") and named in lines[0], (args, lines)
        assert "secret@" not in result.stderr
    reliability.record(
        area=AREA,
        tried="the real CLI (db upgrade, worker, site) with a binary, a 5,000-deep, a directory and a mistyped "
        "sources file, unparsable variables, a Keycloak URL without a scheme and an unreachable database URL",
        held="each exited 1 or 2 with one line on stderr naming the setting, no traceback (before the fix: an "
        "unreachable database printed a traceback)",
        runs=len(cases),
    )
