"""The metrics endpoint survives a failing scrape: 500, logged, and it keeps serving."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

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
