"""Replay: recorded polls (or a simulator run) through other settings, without touching live findings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

import simulator
from ai_telemetry.cli import main
from domain.models import Finding, PipelineInput
from domain.pipeline.records import apply_input_retention, iter_inputs
from domain.pipeline.replay import ReplayError, format_report, replay
from domain.settings import PipelineSettings
from tests.conftest import settings_for, sqlite_copy, sqlite_template
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

FLEET = Path(__file__).parent / "data" / "pipeline_faults.toml"
START = datetime(2026, 1, 5, 10, 0, 7, tzinfo=UTC)


def _poll_faults(engine: Engine) -> None:
    settings = settings_for(engine)
    poller = SourcePoller(
        SimulatedSource("faults", simulator.load_fleet(FLEET)),
        engine,
        settings.scheduler,
        interval_seconds=30,
        signals=SignalProcessor(settings, engine),
    )
    for step in range(60):
        assert poller.poll_once(now=START + timedelta(seconds=30 * step), force=True).outcome == "success"


@pytest.fixture(scope="module")
def recorded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sqlite_template(tmp_path_factory.mktemp("recorded") / "recorded.db", _poll_faults)


@pytest.fixture
def recorded(recorded_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """30 minutes of the fault fleet polled by a worker: findings and the record of its inputs."""
    engine = sqlite_copy(recorded_template, tmp_path)
    yield engine
    engine.dispose()


def live(engine: Engine) -> list[tuple]:  # type: ignore[type-arg]
    with Session(engine) as session:
        return [(f.id, f.kind, f.subject, f.status, f.last_seen, f.count) for f in session.exec(select(Finding))]


def test_replay_with_the_settings_in_force_reproduces_the_live_findings(recorded: Engine) -> None:
    before = live(recorded)
    with Session(recorded) as session:
        report = replay(iter_inputs(session), PipelineSettings(), {})
    assert report.polls == 60 and report.alerts == 0
    assert report.added == [] and report.removed == [] and report.counter_changes == []
    assert {(f.kind, f.subject) for f in report.baseline.findings} == {(k, s) for _, k, s, *_ in before}
    with Session(recorded) as session:
        assert sum(p.items for p in session.exec(select(PipelineInput))) == 60 * 18  # 18 GPUs a poll
    assert live(recorded) == before


def test_replay_says_what_other_settings_would_change(recorded: Engine) -> None:
    before = live(recorded)
    with Session(recorded) as session:
        report = replay(iter_inputs(session), PipelineSettings(), {"persistence_polls": 100, "straggler_k": 4})
    gone = {f.kind for f in report.removed}
    assert gone == {"straggler", "thermal", "idle_allocated"}  # nothing non-critical lasts 100 polls here
    assert report.added == []
    assert report.candidate.counters["escalations"] < report.baseline.counters["escalations"]
    assert (
        "persistence.dropped",
        report.baseline.counters["persistence.dropped"],
        report.candidate.counters["persistence.dropped"],
    ) in report.counter_changes
    text = format_report(report)
    assert "persistence_polls=100" in text and "- would not:" in text and "Straggler on GPU 5 of gpu-a" in text
    assert live(recorded) == before  # live findings untouched


def test_replay_refuses_unknown_or_invalid_settings_and_an_empty_record(recorded: Engine) -> None:
    with Session(recorded) as session:
        with pytest.raises(ReplayError, match="not a pipeline setting: bogus"):
            replay(iter_inputs(session), PipelineSettings(), {"bogus": 1})
        with pytest.raises(ReplayError, match="straggler_k"):
            replay(iter_inputs(session), PipelineSettings(), {"straggler_k": 9})
        with pytest.raises(ReplayError, match="nothing to replay"):
            replay(iter_inputs(session, since=START + timedelta(days=1)), PipelineSettings(), {})


def test_the_record_is_read_a_page_at_a_time_in_order_and_kept_bounded(recorded: Engine) -> None:
    with Session(recorded) as session:
        times = [item.taken_at for item in iter_inputs(session)]
        assert times == sorted(times) and len(times) == 60
        window = list(iter_inputs(session, since=START + timedelta(minutes=10), until=START + timedelta(minutes=20)))
        assert len(window) == 21
        removed = apply_input_retention(session, START + timedelta(hours=24, minutes=15), hours=24)
        session.commit()
        assert removed == 30 and len(list(iter_inputs(session))) == 30


def test_cli_replays_the_record_and_a_simulator_run(recorded: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    url = recorded.url.render_as_string(hide_password=False)
    assert main(["replay", "--database-url", url, "--persistence-polls", "100"]) == 0
    out = capsys.readouterr().out
    assert "Replayed 60 polls" in out and "- would not:" in out

    assert (
        main(
            [
                "replay",
                "--simulate",
                "--fleet",
                str(FLEET),
                "--since",
                "2026-01-05T10:00:07Z",
                "--hours",
                "0.5",
                "--set",
                "straggler_quorum=9",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["polls"] == 61 and report["overrides"] == {"straggler_quorum": "9"}
    assert [f["kind"] for f in report["removed"]] == ["straggler"]  # an 8-GPU job is below a quorum of 9

    assert main(["replay", "--database-url", url, "--set", "nonsense=1"]) == 2
    assert "not a pipeline setting: nonsense" in capsys.readouterr().err
    assert main(["replay", "--database-url", url, "--since", "yesterday-ish"]) == 2
