"""``Config`` defaults and validation: every bad field is a ``ConfigError`` naming it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import fields
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
    assert c.metadata_fsync is True
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
        ("metadata_fsync", "false"),
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
        {"metadata_fsync": False},
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


# ---------------------------------------------------------------------------------------
# The bad-configuration probe: every value an operator or a program might get wrong.

DURATIONS = [
    "rpc_timeout",
    "need_block_query_timeout",
    "gc_delay",
    "resync_retry_delay",
    "scrub_interval",
    "ref_sync_interval",
]
INTS = [
    "resync_workers",
    "resync_tranquility",
    "scrub_tranquility",
    "ram_buffer_max",
    "max_block_size",
    "disk_threads",
]

BAD_VALUES: list[tuple[str, Any]] = [
    *[(name, value) for name in DURATIONS for value in (math.inf, -math.inf, math.nan)],
    *[(name, value) for name in DURATIONS for value in ("30", True, None, -1, 1e300, 10**400)],
    *[(name, 0) for name in DURATIONS if name != "gc_delay"],
    *[(name, value) for name in INTS for value in ("three", 2.0, True, False, None, 10**400)],
    *[
        (name, value)
        for name in ("data_fsync", "metadata_fsync", "disable_scrub")
        for value in (0, 1, "yes", None)
    ],
    ("compression_level", "1"),
    ("compression_level", math.inf),
    ("node_id", None),
    ("metadata_dir", ""),
    ("metadata_dir", b"/m"),
    ("data_dir", ""),
    ("data_dir", 3),
    ("data_dir", [DataDir("/a", read_only="no")]),  # type: ignore[arg-type]
    ("data_dir", [3]),
    ("rpc_secret", "text"),
    ("rpc_secret", bytearray(b"s")),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=repr)
def test_every_value_of_the_probe_is_refused_naming_its_field(field: str, value: Any) -> None:
    config = cfg(**{field: value})
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.field == field
    assert field in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field", DURATIONS)
def test_durations_must_be_finite(field: str) -> None:
    with pytest.raises(ConfigError, match="finite") as info:
        cfg(**{field: math.inf}).validate()
    assert info.value.field == field


@pytest.mark.parametrize(
    "overrides",
    [
        {"gc_delay": 0},
        {"gc_delay": 0.5},
        {"rpc_timeout": 1},
        {"scrub_interval": 100 * 365 * 86400},
        {"ref_sync_interval": 0.001},
        {"metadata_dir": Path("m"), "data_dir": Path("d")},
        {"data_dir": [Path("/a")]},
    ],
)
def test_good_durations_and_paths_validate(overrides: dict[str, Any]) -> None:
    cfg(**overrides).validate()


def test_ref_sync_interval_defaults_to_ten_minutes() -> None:
    assert cfg().ref_sync_interval == 600.0


def test_a_gateway_has_neither_directory() -> None:
    gateway = Config(node_id="g", metadata_dir=None, data_dir=None).validate()
    assert gateway.is_gateway
    assert gateway.data_dirs == ()
    assert not cfg().is_gateway
    with pytest.raises(ConfigError) as info:
        _ = gateway.metadata_path
    assert info.value.field == "metadata_dir"


@pytest.mark.parametrize("missing", ["metadata_dir", "data_dir"])
def test_exactly_one_directory_missing_is_an_error(missing: str) -> None:
    with pytest.raises(ConfigError, match="gateway") as info:
        cfg(**{missing: None}).validate()
    assert info.value.field == missing


def test_paths_accept_str_and_pathlike(tmp_path: Path) -> None:
    class Where:
        def __fspath__(self) -> str:
            return str(tmp_path / "w")

    c = Config(node_id="n", metadata_dir=Where(), data_dir=str(tmp_path / "d")).validate()
    assert c.metadata_dir == tmp_path / "w"
    assert c.metadata_path == tmp_path / "w"
    assert c.data_dir == tmp_path / "d"
    assert DataDir("x").path == Path("x").absolute()


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    (tmp_path / "user_code.py").write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            os.devnull,
            "user_code.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_readme_example_type_checks_from_outside_the_repository(tmp_path: Path) -> None:
    # Every field by keyword, with the types users pass: str paths, lists of paths,
    # None for a gateway. This also keeps Config's declared signature in step with its
    # fields (a field missing there is an "unexpected keyword" error).
    defaults = {f.name: f.default for f in fields(Config) if f.name not in ("node_id",)}
    args = ", ".join(
        f"{name}={value!r}" for name, value in defaults.items() if name not in DIR_FIELDS
    )
    source = f"""
from pathlib import Path
import trioblock

config = trioblock.Config(node_id="n1", metadata_dir="meta", data_dir="data")
every = trioblock.Config(node_id="n1", metadata_dir=Path("m"), data_dir=["a", "b"], {args})
several = trioblock.Config(
    node_id="n1",
    metadata_dir="meta",
    data_dir=[trioblock.DataDir("/a", capacity="2T"), trioblock.DataDir(Path("/b"))],
)
gateway = trioblock.Config(node_id="g", metadata_dir=None, data_dir=None)
where: Path | None = config.metadata_dir
"""
    done = _mypy(tmp_path, source)
    assert done.returncode == 0, (
        f"{done.stdout}{done.stderr}\n(an editable install made before pyproject's "
        "package-dir setting hides the package from mypy: reinstall with pip install -e .)"
    )


DIR_FIELDS = ("metadata_dir", "data_dir")


def test_type_checkers_refuse_a_wrong_path_type(tmp_path: Path) -> None:
    done = _mypy(
        tmp_path,
        "import trioblock\ntrioblock.Config(node_id='n', metadata_dir=3, data_dir='d')\n",
    )
    assert done.returncode == 1
    assert 'Argument "metadata_dir"' in done.stdout


def test_the_disk_defaults_to_the_real_one_and_must_be_a_disk(tmp_path: Path) -> None:
    from trioblock._storage import RealDisk

    base = {"node_id": "n", "metadata_dir": tmp_path / "m", "data_dir": tmp_path / "d"}
    assert Config(**base).validate().disk is None
    disk = RealDisk()
    assert Config(**base, disk=disk).validate().disk is disk
    for bad in ("/dev/sda", 3, object()):
        with pytest.raises(ConfigError) as info:
            Config(**base, disk=bad).validate()
        assert info.value.field == "disk"
