"""The metrics endpoint survives a failing scrape: 500, logged, and it keeps serving."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio

import trioblock
from trioblock._cli.metrics_http import serve_metrics


async def http_get(address: tuple[str, int], path: str = "/metrics") -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_failing_scrape_answers_500_and_the_server_keeps_serving(
    open_node: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_node() as bm, trio.open_nursery() as nursery:
        address = await nursery.start(serve_metrics, bm, ("127.0.0.1", 0))
        status, body = await http_get(address)
        assert status == 200
        assert b"trioblock_rc_entries" in body

        def broken() -> int:
            raise RuntimeError("database is gone")

        monkeypatch.setattr(bm, "rc_len", broken)
        with caplog.at_level(logging.ERROR, logger="trioblock.metrics"):
            status, body = await http_get(address)
        assert status == 500
        assert b"database is gone" in body
        assert "metrics scrape failed" in caplog.text

        monkeypatch.undo()
        status, body = await http_get(address)
        assert status == 200
        assert b"trioblock_rc_entries" in body
        nursery.cancel_scope.cancel()


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


async def test_durations_are_histograms_with_the_old_names_kept_one_release(
    open_node: Callable[..., Any],
) -> None:
    async with open_node() as bm, trio.open_nursery() as nursery:
        for i in range(5):
            await bm.put_block(b"block %d " % i * 100)
        address = await nursery.start(serve_metrics, bm, ("127.0.0.1", 0))
        status, body = await http_get(address)
        assert status == 200
        found = samples(body)
        count = found[("trioblock_write_duration_seconds_count", ())]
        assert count == bm.metrics.write_duration.count >= 5
        buckets = sorted(
            (float(dict(labels)["le"]), value)
            for (name, labels), value in found.items()
            if name == "trioblock_write_duration_seconds_bucket"
        )
        assert buckets[-1] == (float("inf"), count)
        assert [v for _le, v in buckets] == sorted(v for _le, v in buckets)  # cumulative
        assert b"# TYPE trioblock_write_duration_seconds histogram" in body
        # deprecated for one release, still there
        assert ("trioblock_write_duration_max_seconds", ()) in found
        assert ("trioblock_uptime_seconds", ()) in found
        nursery.cancel_scope.cancel()


async def test_start_time_and_build_info_follow_prometheus_conventions(
    open_node: Callable[..., Any],
) -> None:
    import time

    async with open_node() as bm, trio.open_nursery() as nursery:
        address = await nursery.start(serve_metrics, bm, ("127.0.0.1", 0))
        _status, first = await http_get(address)
        await trio.sleep(0.01)
        _status, second = await http_get(address)
        a, b = samples(first), samples(second)
        start = ("trioblock_node_start_time_seconds", ())
        assert a[start] == b[start]  # a timestamp, not a count of seconds
        assert abs(a[start] - (time.time() - bm.uptime())) < 60
        build = [labels for (name, labels) in a if name == "trioblock_build_info"]
        assert len(build) == 1
        assert dict(build[0])["version"] == trioblock.__version__
        if sys.platform == "linux":
            assert ("process_start_time_seconds", ()) in a
        nursery.cancel_scope.cancel()


async def test_only_metrics_is_served_every_other_path_is_404(
    open_node: Callable[..., Any],
) -> None:
    async with open_node() as bm, trio.open_nursery() as nursery:
        address = await nursery.start(serve_metrics, bm, ("127.0.0.1", 0))
        assert (await http_get(address, "/metrics?x=1"))[0] == 200
        for path in ("/", "/metrics/", "/nope", "/favicon.ico"):
            assert (await http_get(address, path))[0] == 404, path
        nursery.cancel_scope.cancel()


def test_a_duration_counts_each_occurrence_in_its_bucket() -> None:
    from trioblock import Duration

    d = Duration()
    for seconds in (0.0, 0.001, 0.0011, 0.3, 31.0):
        d.observe(seconds)
    cumulative = dict(d.cumulative())
    assert cumulative[0.001] == 2  # bounds are inclusive
    assert cumulative[0.0025] == 3
    assert cumulative[0.25] == 3 and cumulative[0.5] == 4
    assert cumulative[30.0] == 4
    assert cumulative[float("inf")] == d.count == 5
    assert d.max == 31.0
