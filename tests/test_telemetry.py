"""Metrics and traces through the OpenTelemetry API, read with the SDK's in-memory reader
and span exporter against the emulator; and ``KLING_LOG`` for a readable stderr log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kling_async import (
    GenericRequest,
    KlingError,
    RetryPolicy,
    SubmissionUncertainError,
    TextToVideo,
    _telemetry,
)
from kling_async.emulator import Emulator, Fault
from kling_async.testing import fast_config, session_for

SECRET = "sk-telemetry-secret-0123456789"


class Recorded:
    """What the in-memory reader and exporter saw."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        meters = MeterProvider(metric_readers=[self.reader])
        self.telemetry = _telemetry.Telemetry(
            meters.get_meter("kling_async"), tracer_provider.get_tracer("kling_async")
        )

    def points(self, name: str) -> list[Any]:
        """Every data point of the metric ``name`` now."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def counts(self, name: str, by: str = "kling.outcome") -> dict[str, float]:
        """A counter's values by one attribute."""
        return {str(p.attributes.get(by)): p.value for p in self.points(name)}

    def spans(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]

    def everything(self) -> str:
        """Every attribute and event of every span and metric point, as text."""
        parts = []
        for span in self.exporter.get_finished_spans():
            parts.append(repr(dict(span.attributes or {})))
            parts.extend(repr((e.name, dict(e.attributes or {}))) for e in span.events)
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    parts.extend(repr(dict(p.attributes)) for p in metric.data.data_points)
        return "\n".join(parts)


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """The SDK's instruments, recording into memory for this test."""
    recorded = Recorded()
    monkeypatch.setattr(_telemetry, "_TELEMETRY", recorded.telemetry)
    return recorded


async def test_submits_are_counted_by_outcome_as_the_emulator_counts_them(otel, tmp_path):
    """Created, replayed (a lost answer retried with its key), refused and uncertain submits
    are counted as such, each a span that ended, each failed attempt an event; the counts
    match the emulator's own, and no idempotency key is recorded."""
    retry = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
    async with Emulator(fast_config()) as emu, session_for(emu, retry=retry) as session:
        await session.submit(TextToVideo("plain"))
        emu.inject(Fault("500", route="submit", when="after"))
        replayed = await session.submit(TextToVideo("lost answer"))
        with pytest.raises(KlingError):
            await session.submit(GenericRequest("x", model="not-a-model-the-emulator-knows"))
        emu.inject(Fault("503", route="submit", times=3))
        with pytest.raises(SubmissionUncertainError) as uncertain_info:
            await session.submit(TextToVideo("never answered"))
        stats = emu.stats
    counts = otel.counts("kling.submits")
    assert counts == {"created": 1, "replayed": 1, "refused": 1, "uncertain": 1}
    assert counts["created"] + counts["replayed"] == stats.submissions
    assert counts["replayed"] == stats.idempotent_replays
    spans = otel.spans("kling.submit")
    assert len(spans) == 4 and all(span.end_time for span in spans)
    (lost,) = [s for s in spans if s.attributes.get("kling.task.id") == replayed.id]
    assert lost.attributes["kling.replayed"] is True
    assert [e.name for e in lost.events] == ["kling.submit.attempt_failed"]
    assert lost.attributes["kling.model"] == "kling-v3" and lost.attributes["kling.duration"] == 5
    (uncertain,) = [s for s in spans if s.attributes["kling.outcome"] == "uncertain"]
    assert len(uncertain.events) == 3 and not uncertain.status.is_ok
    keys = (replayed.idempotency_key, uncertain_info.value.idempotency_key)
    assert all(key and key not in otel.everything() for key in keys)  # never recorded


async def test_downloads_are_counted_with_their_bytes_and_name_only_the_host(otel, tmp_path):
    """A download is a span naming the task and the storage host (never the URL's path or
    query, which carry its signature), counted with the bytes it saved."""
    async with Emulator(fast_config()) as emu, session_for(emu) as session:
        task = await session.submit(TextToVideo("a cat"))
        url = (await task).url
        path = await session.download(task, tmp_path / "cat.mp4")
    assert otel.counts("kling.downloads") == {"ok": 1}
    (size,) = otel.points("kling.download.size")
    assert size.value == path.stat().st_size
    (span,) = otel.spans("kling.download")
    assert span.attributes["kling.task.id"] == task.id
    assert span.attributes["server.address"] == "127.0.0.1"
    assert url.split("?")[0].split("/")[-1] not in otel.everything()


async def test_no_attribute_or_event_carries_the_api_key(otel, tmp_path):
    """Whatever the server echoes, the API key appears in no span, event or metric."""
    config = fast_config(fault_rate=0.5, fault_kinds=("echo_key", "500"), seed=3)
    retry = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.02)
    async with Emulator(config) as emu, session_for(emu, api_key=SECRET, retry=retry) as session:
        for i in range(5):
            try:
                task = await session.submit(TextToVideo(f"echo {i}"))
                await session.download(task, tmp_path / f"{i}.mp4")
            except KlingError:
                pass
    text = otel.everything()
    assert text and SECRET not in text and SECRET[:12] not in text


def test_without_the_opentelemetry_api_nothing_is_recorded(tmp_path: Path) -> None:
    """Without opentelemetry installed the SDK works and its hooks are a silent no-op."""
    code = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed
        from kling_async import TextToVideo, _telemetry
        from kling_async.emulator import Emulator
        from kling_async.testing import fast_config, session_for

        async def main():
            async with Emulator(fast_config()) as emu, session_for(emu) as session:
                video = await session.generate(TextToVideo("a cat"), timeout=30)
            print(_telemetry.telemetry().enabled, video.url.startswith("http"))

        asyncio.run(main())
        """
    )
    result = run_python(code, tmp_path)
    assert result.stdout.split() == ["False", "True"], result.stderr


def test_an_sdk_configured_globally_records_the_sessions(tmp_path: Path) -> None:
    """The documented set-up (a MeterProvider and a TracerProvider set globally, before or
    after the import) records a session's submits and spans."""
    code = textwrap.dedent(
        """
        import asyncio, json
        from kling_async import TextToVideo
        from kling_async.emulator import Emulator
        from kling_async.testing import fast_config, session_for
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        tracing = TracerProvider()
        tracing.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracing)

        async def main():
            async with Emulator(fast_config()) as emu, session_for(emu) as session:
                await session.generate(TextToVideo("a cat"), timeout=30)
            names = sorted({m.name for r in reader.get_metrics_data().resource_metrics
                            for s in r.scope_metrics for m in s.metrics})
            spans = sorted({s.name for s in exporter.get_finished_spans()})
            print(json.dumps({"metrics": names, "spans": spans}))

        asyncio.run(main())
        """
    )
    result = run_python(code, tmp_path)
    seen = json.loads(result.stdout)
    assert "kling.submits" in seen["metrics"], result.stderr
    assert "kling.submit" in seen["spans"]


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (nothing of this test process's set-up)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("APIMART_", "KLING_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


GENERATE = textwrap.dedent(
    """
    import asyncio
    from kling_async import TextToVideo
    from kling_async.emulator import Emulator
    from kling_async.testing import fast_config, session_for

    async def main():
        async with Emulator(fast_config()) as emu, session_for(emu) as session:
            await session.generate(TextToVideo("a cat"), timeout=30)

    asyncio.run(main())
    """
)


def test_kling_log_debug_prints_readable_records_with_their_fields(tmp_path: Path) -> None:
    """``KLING_LOG=debug`` sends the package's records to stderr, readable, each with its
    structured fields; no code needed."""
    result = run_python(GENERATE, tmp_path, KLING_LOG="debug")
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if " submitted task_" in line]
    assert " kling_async DEBUG submitted task_" in line
    assert "(task_id=task_" in line and "attempts=1" in line and "replayed=False" in line


@pytest.mark.parametrize(("value", "expected"), [("", ""), ("info", ""), ("loud", "ignoring")])
def test_kling_log_stays_quiet_unless_asked(tmp_path: Path, value: str, expected: str) -> None:
    """Unset (or at info, for a run with nothing to report) nothing is printed; a value
    that is not a level is named once and ignored."""
    result = run_python(GENERATE, tmp_path, KLING_LOG=value)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" if not expected else expected in result.stderr


def _counter(text: str, name: str, outcome: str) -> float:
    """A Prometheus counter's value for one ``kling_outcome`` (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and f'kling_outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_the_fastapi_example_serves_its_metrics_for_prometheus(kling_emulator):
    """``GET /metrics`` of the example service answers Prometheus's text format with the
    SDK's metrics: a submit through the service moves ``kling_submits_total``."""
    from test_fastapi_app import in_process

    async with in_process(kling_emulator) as client:
        before = (await client.get("/metrics")).text
        submitted = await client.post("/videos", json={"prompt": "a cat"})
        await client.get(f"/videos/{submitted.json()['id']}/result?timeout=30")
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    created = _counter(scraped.text, "kling_submits_total", "created")
    assert created == _counter(before, "kling_submits_total", "created") + 1
