"""The node side of admin requests (``trioblock._cli.admin_service``), on an embedded node."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from trioblock import blake2sum
from trioblock._cli.admin_service import (
    MAX_ERRORS_PAGE,
    AdminRequestError,
    answer_admin,
)

OpenNode = Callable[..., Any]


async def test_put_takes_a_body_and_get_answers_with_one(open_node: OpenNode) -> None:
    data = os.urandom(200_000)
    async with open_node() as bm:
        reply = await answer_admin(bm, {"op": "put", "incref": True}, data)
        assert reply == {"hash": blake2sum(data).hex(), "size": len(data), "refcount": 1}
        got = await answer_admin(bm, {"op": "get", "hash": blake2sum(data).hex()})
        assert got == ({"hash": blake2sum(data).hex(), "size": len(data)}, data)


@pytest.mark.parametrize(
    ("request_", "body", "match"),
    [
        ({"op": "nope"}, None, "unknown admin op"),
        ({}, None, "unknown admin op"),
        ({"op": "status"}, b"x", "takes no body"),
        ({"op": "purge", "hash": "12"}, None, "64 hex digits"),
        ({"op": "errors", "limit": 0}, None, "limit"),
        ({"op": "set_resync", "workers": 99}, None, "1..8"),
        ({"op": "scrub", "cmd": "explode"}, None, "unknown scrub command"),
        ({"op": "operation", "name": "defrag"}, None, "unknown operation"),
        ({"op": "put"}, None, "needs a body"),
    ],
)
async def test_bad_requests_are_refused_not_crashes(
    open_node: OpenNode, request_: dict[str, Any], body: bytes | None, match: str
) -> None:
    async with open_node() as bm:
        with pytest.raises(AdminRequestError, match=match):
            await answer_admin(bm, request_, body)
        info = await answer_admin(bm, {"op": "info"})
        assert isinstance(info, dict)
        assert info["node_id"] == bm.node_id


async def test_errors_are_paginated_in_hash_order(
    open_node: OpenNode, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_node() as bm:
        hashes = sorted(blake2sum(b"%d" % i).hex() for i in range(MAX_ERRORS_PAGE + 50))
        # Referenced but stored nowhere: each one's resync fails (no peer can provide it).
        with bm.transaction() as tx:
            for hx in hashes:
                bm.incref(bytes.fromhex(hx), tx)
        with trio.fail_after(600):
            while bm.resync_errors_len() < len(hashes):  # noqa: ASYNC110 (a count, no event)
                await trio.sleep(1)
        first = await answer_admin(bm, {"op": "errors"})
        assert isinstance(first, dict)
        assert first["total"] == len(hashes)
        assert [e["hash"] for e in first["errors"]] == hashes[:MAX_ERRORS_PAGE]
        second = await answer_admin(bm, {"op": "errors", "after": first["next"]})
        assert isinstance(second, dict)
        assert [e["hash"] for e in second["errors"]] == hashes[MAX_ERRORS_PAGE:]
        assert second["next"] is None
        small = await answer_admin(bm, {"op": "errors", "limit": 3})
        assert isinstance(small, dict)
        assert small["next"] == hashes[2]


async def test_repair_starts_in_the_background_and_reports_when_done(
    open_node: OpenNode,
) -> None:
    async with open_node() as bm:
        for i in range(5):
            bm.incref(await bm.put_block(b"repair me %d" % i))
        started = await answer_admin(bm, {"op": "repair"})
        assert isinstance(started, dict)
        assert started["operation"]["state"] == "running"
        await bm.repair()  # joins the same run
        await trio.testing.wait_all_tasks_blocked()
        done = await answer_admin(bm, {"op": "operation", "name": "repair"})
        assert isinstance(done, dict)
        view = done["operation"]
        assert view["state"] == "done"
        assert view["progress"] == 1.0
        assert view["report"]["rc_blocks"] == 5


async def test_purge_reports_whether_the_block_was_known(open_node: OpenNode) -> None:
    async with open_node() as bm:
        h = await bm.put_block(b"doomed")
        bm.incref(h)
        reply = await answer_admin(bm, {"op": "purge", "hash": h.hex()})
        assert isinstance(reply, dict)
        assert reply["known"] and reply["refcount"] == 1 and reply["removed_copies"] == 1
        again = await answer_admin(bm, {"op": "purge", "hash": h.hex()})
        assert isinstance(again, dict)
        assert not again["known"]
