"""Puts, gets and streams on the embedded default (one node, no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing
import zstandard

import trioblock
from trioblock import CorruptBlockError, MissingBlockError, blake2sum


def big_block(mib: int) -> bytes:
    """Several MiB that compress a little, so a stream has several chunks either way."""
    rnd = os.urandom(mib << 19)
    return b"".join(rnd[i : i + 4096] + bytes(4096) for i in range(0, len(rnd), 4096))


async def test_put_get_round_trip_compressed_by_default(open_node, data_dir: Path, disk) -> None:
    data = b"hello trioblock\n" * 100
    async with open_node() as bm:
        h = await bm.put_block(data)
        assert h == blake2sum(data)
        assert await bm.get_block(h) == data
        assert await bm.has_local_block(h)
    path = disk.block_file(data_dir, h, compressed=True)
    assert disk.files_under(data_dir) == [path]
    params = zstandard.get_frame_parameters(path.read_bytes())
    assert params.has_checksum
    assert params.content_size == len(data)


async def test_compression_level_none_stores_plain(open_node, data_dir: Path, disk) -> None:
    data = b"plain " * 100
    async with open_node(compression_level=None) as bm:
        h = await bm.put_block(data)
        assert await bm.get_block(h) == data
    assert disk.files_under(data_dir) == [disk.block_file(data_dir, h, compressed=False)]
    assert disk.block_file(data_dir, h, compressed=False).read_bytes() == data


async def test_compress_false_stores_plain(open_node, data_dir: Path, disk) -> None:
    data = b"not compressed " * 100
    async with open_node() as bm:
        h = await bm.put_block(data, compress=False)
        assert await bm.get_block(h) == data
        # A later compressed put replaces the plain copy.
        assert await bm.put_block(data) == h
        assert await bm.get_block(h) == data
    assert disk.files_under(data_dir) == [disk.block_file(data_dir, h, compressed=True)]


async def test_blocks_written_under_either_setting_are_readable(open_node) -> None:
    async with open_node(compression_level=None) as bm:
        plain_h = await bm.put_block(b"plain one")
    async with open_node() as bm:
        zst_h = await bm.put_block(b"compressed one")
        assert await bm.get_block(plain_h) == b"plain one"
    async with open_node(compression_level=None) as bm:
        assert await bm.get_block(zst_h) == b"compressed one"
        assert await bm.get_block(plain_h) == b"plain one"


async def test_empty_block_round_trips(open_node) -> None:
    async with open_node() as bm:
        h = await bm.put_block(b"")
        assert h == blake2sum(b"")
        assert await bm.get_block(h) == b""
        async with bm.stream_block(h) as chunks:
            assert b"".join([c async for c in chunks]) == b""


async def test_put_is_idempotent(open_node, data_dir: Path, disk) -> None:
    async with open_node() as bm:
        h1 = await bm.put_block(b"same")
        h2 = await bm.put_block(b"same")
        assert h1 == h2
    assert len(disk.files_under(data_dir)) == 1


async def test_rpc_put_block_with_the_right_hash_stores(open_node) -> None:
    data = b"given hash"
    async with open_node() as bm:
        await bm.rpc_put_block(blake2sum(data), data)
        assert await bm.get_block(blake2sum(data)) == data


async def test_rpc_put_block_with_a_wrong_hash_is_refused(open_node, data_dir: Path, disk) -> None:
    async with open_node() as bm:
        with pytest.raises(ValueError):
            await bm.rpc_put_block(blake2sum(b"something else"), b"data")
        with pytest.raises(ValueError):
            await bm.rpc_put_block(b"short", b"data")
        assert not await bm.has_local_block(blake2sum(b"something else"))
    assert disk.files_under(data_dir) == []


async def test_put_larger_than_max_block_size_is_refused(open_node) -> None:
    async with open_node(max_block_size=1000) as bm:
        await bm.put_block(b"x" * 1000)
        with pytest.raises(ValueError):
            await bm.put_block(b"x" * 1001)


async def test_get_of_unknown_hash_is_missing(open_node) -> None:
    h = blake2sum(b"never stored")
    async with open_node() as bm:
        with pytest.raises(MissingBlockError) as info:
            await bm.get_block(h)
        assert info.value.hash == h
        assert not await bm.has_local_block(h)
        with pytest.raises(MissingBlockError):
            async with bm.stream_block(h) as chunks:
                async for _ in chunks:
                    pass


async def test_get_rejects_a_malformed_hash(open_node) -> None:
    async with open_node() as bm:
        with pytest.raises(ValueError):
            await bm.get_block(b"\0" * 31)


@pytest.mark.parametrize(("level", "suffix"), [(None, ""), (1, ".zst")], ids=["plain", "zstd"])
async def test_corrupt_file_is_detected_quarantined_and_queued(
    open_node,
    data_dir: Path,
    disk,
    autojump_clock: trio.testing.MockClock,
    level: int | None,
    suffix: str,
) -> None:
    data = b"soon to be corrupted " * 64
    async with open_node(compression_level=level) as bm:
        h = await bm.put_block(data)
        bm.incref(h)
        path = disk.block_file(data_dir, h, compressed=level is not None)
        disk.flip_byte(path)
        before = bm.metrics.corruptions
        now = bm.now_msec()
        with pytest.raises(CorruptBlockError) as info:
            await bm.get_block(h)
        assert info.value.hash == h
        assert bm.metrics.corruptions == before + 1
        assert not path.exists()
        assert path.with_name(path.name + ".corrupted").is_file()
        # Queued for an immediate resync, in the same step as the quarantine.
        assert trioblock.QueuedResync(h, now) in bm.list_resync_queue(10)
        # The resync runs at once; on a lone node it can only record the failure.
        await trio.testing.wait_all_tasks_blocked()
        (err,) = bm.list_resync_errors()
        assert (err.hash, err.error_count, err.last_try) == (h, 1, now)
        # Once quarantined, the block is simply missing.
        with pytest.raises(MissingBlockError):
            await bm.get_block(h)
        # Putting it again repairs it.
        await bm.put_block(data)
        assert await bm.get_block(h) == data


@pytest.mark.parametrize("level", [None, 1], ids=["plain", "zstd"])
async def test_stream_round_trips_in_several_chunks(open_node, level: int | None) -> None:
    data = big_block(4)
    async with open_node(compression_level=level) as bm:
        h = await bm.put_block(data)
        async with bm.stream_block(h) as chunks:
            got = [c async for c in chunks]
    assert len(got) >= 3
    assert b"".join(got) == data


@pytest.mark.parametrize(
    ("level", "where"),
    [(None, "end"), (None, "middle"), (1, "end"), (1, "middle")],
)
async def test_stream_of_corrupt_block_fails_before_the_last_chunk(
    open_node,
    data_dir: Path,
    disk,
    autojump_clock: trio.testing.MockClock,
    level: int | None,
    where: str,
) -> None:
    data = big_block(4)
    async with open_node(compression_level=level) as bm:
        h = await bm.put_block(data)
        path = disk.block_file(data_dir, h, compressed=level is not None)
        size = path.stat().st_size
        disk.flip_byte(path, size - 100 if where == "end" else size // 2)
        received = 0
        now = bm.now_msec()
        with pytest.raises(CorruptBlockError):
            async with bm.stream_block(h) as chunks:
                async for chunk in chunks:
                    received += len(chunk)
        assert received < len(data)
        assert not path.exists()
        assert path.with_name(path.name + ".corrupted").exists()
        assert bm.metrics.corruptions == 1
        assert trioblock.QueuedResync(h, now) in bm.list_resync_queue(10)


async def test_leaving_a_stream_early_closes_it_cleanly(open_node) -> None:
    data = big_block(3)
    async with open_node() as bm:
        h = await bm.put_block(data)
        async with bm.stream_block(h) as chunks:
            async for _chunk in chunks:
                break
        assert await bm.get_block(h) == data


async def test_concurrent_puts_of_the_same_block(open_node, data_dir: Path, disk) -> None:
    data = big_block(1)
    async with open_node() as bm, trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(bm.put_block, data)
    async with open_node() as bm:
        assert await bm.get_block(blake2sum(data)) == data
    assert disk.temp_files_under(data_dir) == []
    assert disk.files_under(data_dir) == [disk.block_file(data_dir, blake2sum(data))]


async def test_operations_on_a_closed_node_fail(open_node) -> None:
    async with open_node() as bm:
        h = await bm.put_block(b"x")
    with pytest.raises(trioblock.NodeClosedError):
        await bm.put_block(b"y")
    with pytest.raises(trioblock.NodeClosedError):
        await bm.get_block(h)


async def test_manager_is_exported_type(open_node) -> None:
    async with open_node() as bm:
        assert isinstance(bm, trioblock.BlockManager)
        assert isinstance(bm.metrics, trioblock.Metrics)


@pytest.mark.parametrize(
    ("data", "words"),
    [(None, "not NoneType"), (5, "not int"), ("text", "not str: encode the text first")],
)
async def test_a_put_of_something_else_than_bytes_says_what_a_block_is(
    open_node, data: object, words: str
) -> None:
    async with open_node() as bm:
        with pytest.raises(TypeError, match=words):
            await bm.put_block(data)  # type: ignore[arg-type]
        assert await bm.put_block(bytearray(b"bytes-like")) == blake2sum(b"bytes-like")
