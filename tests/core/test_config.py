"""``Config`` defaults and validation: every bad field is a ``ConfigError`` naming it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from trioblock import Config, ConfigError, DataDir
from trioblock._core.config import parse_size


def cfg(**overrides: Any) -> Config:
    fields: dict[str, Any] = {"node_id": "n1", "metadata_dir": "/m", "data_dir": "/d"}
    fields.update(overrides)
    return Config(**fields)


def test_defaults_match_the_design() -> None:
    c = cfg()
    assert c.compression_level == 1
    assert c.data_fsync is True
    assert c.rpc_timeout == 30.0
    assert c.need_block_query_timeout == 5.0
    assert c.gc_delay == 600.0
    assert c.resync_retry_delay == 60.0
    assert c.resync_workers == 1
    assert c.resync_tranquility == 2
    assert c.scrub_interval == 25 * 86400
    assert c.scrub_tranquility == 4
    assert c.disable_scrub is False
    assert c.ram_buffer_max == 256 * 1024 * 1024
    assert c.rpc_secret is None
    assert c.validate() is c


def test_paths_are_normalised() -> None:
    c = cfg(data_dir=["/a", DataDir("/b", capacity=1)])
    assert c.metadata_dir == Path("/m")
    assert c.data_dir == (DataDir(Path("/a")), DataDir(Path("/b"), capacity=1))
    assert cfg().data_dirs == (DataDir(Path("/d")),)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        cfg().gc_delay = 1.0  # type: ignore[misc]


def test_msec_properties() -> None:
    c = cfg(gc_delay=1.5, rpc_timeout=2.25, resync_retry_delay=0.5)
    assert (c.gc_delay_msec, c.rpc_timeout_msec, c.resync_retry_delay_msec) == (1500, 2250, 500)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node_id", ""),
        ("node_id", "has space"),
        ("node_id", "x" * 65),
        ("node_id", "é"),
        ("node_id", "a/b"),
        ("node_id", 7),
        ("metadata_dir", 3),
        ("data_dir", []),
        ("data_dir", [DataDir("/a", read_only=True)]),
        ("data_dir", [DataDir("/a", capacity=1), DataDir("/a", capacity=1)]),
        ("data_dir", [DataDir("/a"), DataDir("/b", capacity=1)]),
        ("data_dir", [DataDir("/a", capacity="lots"), DataDir("/b", capacity=1)]),
        ("data_dir", [DataDir("/a", capacity=0), DataDir("/b", capacity=1)]),
        ("compression_level", 99),
        ("compression_level", 23),
        ("compression_level", -8),
        ("compression_level", True),
        ("compression_level", 1.0),
        ("data_fsync", 1),
        ("disable_scrub", "no"),
        ("rpc_timeout", 0),
        ("rpc_timeout", -1),
        ("rpc_timeout", math.nan),
        ("rpc_timeout", "30"),
        ("need_block_query_timeout", 0),
        ("gc_delay", -1),
        ("gc_delay", True),
        ("resync_retry_delay", 0),
        ("resync_retry_delay", -5),
        ("scrub_interval", -1.0),
        ("resync_workers", 0),
        ("resync_workers", 9),
        ("resync_workers", 2.0),
        ("resync_workers", True),
        ("resync_tranquility", -1),
        ("scrub_tranquility", -1),
        ("ram_buffer_max", 0),
        ("max_block_size", 0),
        ("disk_threads", 0),
        ("rpc_secret", b""),
        ("rpc_secret", 12),
    ],
)
def test_each_bad_field_is_named(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(**{field: value}).validate()
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "overrides",
    [
        {"node_id": "A-z.0_9"},
        {"node_id": "x" * 64},
        {"compression_level": None},
        {"compression_level": -7},
        {"compression_level": 22},
        {"gc_delay": 0},
        {"resync_workers": 8},
        {"resync_tranquility": 0},
        {"data_dir": [DataDir("/a", capacity="2TiB"), DataDir("/b", read_only=True)]},
        {"rpc_secret": b"s"},
    ],
)
def test_good_values_validate(overrides: dict[str, Any]) -> None:
    cfg(**overrides).validate()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500G", 500 * 10**9),
        ("2TiB", 2 * 2**40),
        ("1.5T", 15 * 10**11),
        ("10", 10),
        ("3 KiB", 3072),
    ],
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text, "f") == size


@pytest.mark.parametrize("bad", ["", "G", "-1G", "0", True, 0, -3, "1X"])
def test_bad_sizes_name_the_field(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(bad, "some_field")
    assert info.value.field == "some_field"
