"""The bad-configuration probe: ``trioblock serve`` refuses each bad node file at once.

Every case is one mistake in an otherwise good node file (or around it: the secret file,
the directories, the config path itself). Each must give exit 2 and exactly one line on
stderr naming the key, with no traceback, and nothing may have started: no ready line,
no metadata directory created. A case that wrongly starts the node is stopped by a
SIGINT from a timer (the node then exits 0 and the test fails on the exit code; a serve
stuck before Trio runs, say on opening a FIFO, fails the test as hung).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_kit import SECRET_HEX, Result, cli_env, write_node_files

from trioblock import ConfigError
from trioblock._cli.nodefile import load_node_file

Cli = Callable[..., Result]

PEERS = '[peers]\nn0 = "127.0.0.1:0"\nn1 = "127.0.0.1:1"\nn2 = "127.0.0.1:2"\n'


@dataclass
class Case:
    """One bad configuration: TOML lines to add or a setup function, and the key to blame."""

    key: str
    extra: str = ""
    setup: Callable[[Path, Path], Path] | None = None  # (root, config) -> config to pass

    def make(self, root: Path) -> Path:
        config, _secret = write_node_files(root, 0, self.extra)
        return self.setup(root, config) if self.setup is not None else config


def _replace(old: str, new: str) -> Callable[[Path, Path], Path]:
    def setup(root: Path, config: Path) -> Path:
        text = config.read_text()
        assert old in text
        config.write_text(text.replace(old, new))
        return config

    return setup


def _secret_bytes(data: bytes) -> Callable[[Path, Path], Path]:
    def setup(root: Path, config: Path) -> Path:
        (root / "secret").write_bytes(data)
        return config

    return setup


def _secret_is_dir(root: Path, config: Path) -> Path:
    (root / "secret").unlink()
    (root / "secret").mkdir()
    return config


def _config_is_dir(root: Path, config: Path) -> Path:
    path = root / "conf.d"
    path.mkdir()
    return path


def _config_not_utf8(root: Path, config: Path) -> Path:
    config.write_bytes(config.read_bytes() + b'# caf\xe9\nnode_name = "\xff"\n')
    return config


def _config_unreadable(root: Path, config: Path) -> Path:
    # A regular file whose read fails (EIO) whatever our privileges: the probe runs as
    # root in CI, where chmod 000 does not stop reading.
    return Path("/proc/self/mem")


def _config_fifo(root: Path, config: Path) -> Path:
    path = root / "fifo.toml"
    os.mkfifo(path)
    return path


def _file_at(name: str) -> Callable[[Path, Path], Path]:
    def setup(root: Path, config: Path) -> Path:
        (root / name).write_text("not a directory\n")
        return config

    return setup


def _data_inside_a_file(root: Path, config: Path) -> Path:
    (root / "plain").write_text("x")
    return _replace('data_dir = "data"', 'data_dir = "plain/data"')(root, config)


def _not_a_certificate(root: Path, config: Path) -> Path:
    (root / "junk.pem").write_text("-----BEGIN NOTHING-----\n")
    return config


CASES: dict[str, Case] = {
    "replication_factor string": Case(
        "replication_factor", 'replication_factor = "three"\n' + PEERS
    ),
    "write_quorum string": Case("write_quorum", 'write_quorum = "two"\n' + PEERS),
    "replication_factor float": Case("replication_factor", "replication_factor = 3.0\n" + PEERS),
    "replication_factor bool": Case("replication_factor", "replication_factor = true\n" + PEERS),
    "replication_factor too big": Case("replication_factor", "replication_factor = 5\n" + PEERS),
    "write_quorum zero": Case("write_quorum", "write_quorum = 0\n" + PEERS),
    "write_quorum above rf": Case("write_quorum", "write_quorum = 4\n" + PEERS),
    "replication without peers": Case("replication_factor", "replication_factor = 3\n"),
    "resync_workers string": Case("resync_workers", 'resync_workers = "2"\n'),
    "resync_workers too many": Case("resync_workers", "resync_workers = 9\n"),
    "resync_workers float": Case("resync_workers", "resync_workers = 2.0\n"),
    "resync_tranquility negative": Case(
        "resync_tranquility", "", _replace("resync_tranquility = 0", "resync_tranquility = -1")
    ),
    "scrub_tranquility bool": Case(
        "scrub_tranquility", "", _replace("scrub_tranquility = 0", "scrub_tranquility = true")
    ),
    "data_fsync int": Case("data_fsync", "", _replace("data_fsync = false", "data_fsync = 1")),
    "data_fsync string": Case(
        "data_fsync", "", _replace("data_fsync = false", 'data_fsync = "no"')
    ),
    "metadata_fsync int": Case("metadata_fsync", "metadata_fsync = 0\n"),
    "metadata_fsync string": Case("metadata_fsync", 'metadata_fsync = "false"\n'),
    "disable_scrub string": Case("disable_scrub", 'disable_scrub = "yes"\n'),
    "scrub_interval inf": Case("scrub_interval", "scrub_interval = inf\n"),
    "scrub_interval zero": Case("scrub_interval", "scrub_interval = 0\n"),
    "rpc_timeout inf": Case("rpc_timeout", "rpc_timeout = inf\n"),
    "rpc_timeout zero": Case("rpc_timeout", "rpc_timeout = 0\n"),
    "rpc_timeout negative": Case("rpc_timeout", "rpc_timeout = -5\n"),
    "rpc_timeout nan": Case("rpc_timeout", "rpc_timeout = nan\n"),
    "rpc_timeout string": Case("rpc_timeout", 'rpc_timeout = "thirty"\n'),
    "gc_delay inf": Case("gc_delay", "gc_delay = inf\n"),
    "gc_delay negative": Case("gc_delay", "gc_delay = -1\n"),
    "need_block_query_timeout inf": Case(
        "need_block_query_timeout", "need_block_query_timeout = inf\n"
    ),
    "resync_retry_delay zero": Case("resync_retry_delay", "resync_retry_delay = 0\n"),
    "resync_retry_delay huge": Case("resync_retry_delay", "resync_retry_delay = 1e300\n"),
    "ref_sync_interval inf": Case("ref_sync_interval", "ref_sync_interval = inf\n"),
    "ref_sync_interval zero": Case("ref_sync_interval", "ref_sync_interval = 0\n"),
    "compression_level too high": Case("compression_level", "compression_level = 99\n"),
    "compression_level word": Case("compression_level", 'compression_level = "fast"\n'),
    "max_block_size zero": Case("max_block_size", "max_block_size = 0\n"),
    "ram_buffer_max word": Case("ram_buffer_max", 'ram_buffer_max = "lots"\n'),
    "disk_threads zero": Case("disk_threads", "disk_threads = 0\n"),
    "node_id with space": Case("node_id", "", _replace('node_id = "n0"', 'node_id = "n 0"')),
    "node_id number": Case("node_id", "", _replace('node_id = "n0"', "node_id = 7")),
    "node_id missing": Case("node_id", "", _replace('node_id = "n0"', "")),
    "unknown key": Case("bogus", "bogus = 1\n"),
    "metadata_dir number": Case(
        "metadata_dir", "", _replace('metadata_dir = "meta"', "metadata_dir = 3")
    ),
    "metadata_dir empty": Case(
        "metadata_dir", "", _replace('metadata_dir = "meta"', 'metadata_dir = ""')
    ),
    "data_dir empty list": Case("data_dir", "", _replace('data_dir = "data"', "data_dir = []")),
    "data_dir read_only string": Case(
        "data_dir",
        "",
        _replace('data_dir = "data"', 'data_dir = [{ path = "d1", read_only = "yes" }]'),
    ),
    "rpc_bind_addr no port": Case(
        "rpc_bind_addr",
        "",
        _replace('rpc_bind_addr = "127.0.0.1:0"', 'rpc_bind_addr = "localhost"'),
    ),
    "rpc_bind_addr port too big": Case(
        "rpc_bind_addr",
        "",
        _replace('rpc_bind_addr = "127.0.0.1:0"', 'rpc_bind_addr = "127.0.0.1:99999"'),
    ),
    "metrics_addr garbage": Case("metrics_addr", 'metrics_addr = "x"\n'),
    "rpc_secret empty": Case(
        "rpc_secret", "", _replace('rpc_secret_file = "secret"', 'rpc_secret = ""')
    ),
    "secret file not UTF-8": Case("rpc_secret_file", "", _secret_bytes(b"\xff\xfe secret \x80")),
    "secret file empty": Case("rpc_secret_file", "", _secret_bytes(b"\n")),
    "secret file missing": Case(
        "rpc_secret_file", "", _replace('rpc_secret_file = "secret"', 'rpc_secret_file = "nowhere"')
    ),
    "secret file is a directory": Case("rpc_secret_file", "", _secret_is_dir),
    "config is a directory": Case("config", "", _config_is_dir),
    "config not UTF-8": Case("config", "", _config_not_utf8),
    "config unreadable": Case("config", "", _config_unreadable),
    "config is a FIFO": Case("config", "", _config_fifo),
    "config is a device": Case("config", "", lambda root, config: Path("/dev/null")),
    "config not TOML": Case("config", "this is = = not toml\n"),
    "metadata_dir is a file": Case("metadata_dir", "", _file_at("meta")),
    "data_dir is a file": Case("data_dir", "", _file_at("data")),
    "data_dir inside a file": Case("data_dir", "", _data_inside_a_file),
    "peers not a table": Case("peers", 'peers = "n1"\n'),
    "peer address bad": Case("peers.n1", '[peers]\nn0 = "127.0.0.1:0"\nn1 = "nohost"\n'),
    "peer zone number": Case(
        "peers.n1", '[peers]\nn0 = "127.0.0.1:0"\nn1 = { addr = "127.0.0.1:1", zone = 3 }\n'
    ),
    "peers without secret": Case("rpc_secret", PEERS, _replace('rpc_secret_file = "secret"', "")),
    "join not a boolean": Case("join", 'join = "yes"\n' + PEERS),
    "join without peers": Case("peers", "join = true\n"),
    "join listing itself": Case("peers.n0", "join = true\n" + PEERS),
    "join with a replication factor": Case(
        "replication_factor", 'join = true\nreplication_factor = 3\n[peers]\nn1 = "127.0.0.1:1"\n'
    ),
    "join without secret": Case(
        "rpc_secret",
        'join = true\n[peers]\nn1 = "127.0.0.1:1"\n',
        _replace('rpc_secret_file = "secret"', ""),
    ),
    "tls not a table": Case("tls", 'tls = "on"\n'),
    "tls unknown key": Case("tls.certificate", '[tls]\ncertificate = "x.pem"\n'),
    "tls serving without cert": Case("tls.cert_file", '[tls]\nca_file = "ca.pem"\n'),
    "tls cert missing": Case("tls.cert_file", '[tls]\ncert_file = "nowhere.pem"\n'),
    "tls cert not PEM": Case(
        "tls.cert_file", '[tls]\ncert_file = "junk.pem"\n', _not_a_certificate
    ),
    "tls require without CA": Case(
        "tls.ca_file", '[tls]\ncert_file = "junk.pem"\nrequire_client_cert = true\n'
    ),
    "tls require string": Case("tls.require_client_cert", '[tls]\nrequire_client_cert = "yes"\n'),
}


@contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    """Send ourselves SIGINT after ``seconds``: a node that wrongly started stops (exit 0)."""

    def fire(signum: int, frame: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_one_line_naming(result: Result, key: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"trioblock: invalid configuration: {key}: "), lines[0]
    assert "Traceback" not in result.stderr
    assert "Group" not in result.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_serve_refuses_each_bad_configuration(cli: Cli, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    config = case.make(tmp_path)
    try:
        with interrupt_after(10):
            result = cli("serve", "--config", str(config))
    except KeyboardInterrupt:  # the timer fired while serve was stuck outside Trio
        pytest.fail(f"{name}: serve hung instead of refusing the configuration")
    assert result.code == 2, f"{name}: exit {result.code}\n{result.stdout}{result.stderr}"
    assert "ready" not in result.stdout
    assert_one_line_naming(result, case.key)
    if not name.endswith("is a file"):
        assert not (tmp_path / "meta").exists(), "the node was opened"


@pytest.mark.parametrize(
    "name", ["config is a directory", "config not UTF-8", "config unreadable", "config is a FIFO"]
)
def test_client_commands_refuse_an_unreadable_config(cli: Cli, tmp_path: Path, name: str) -> None:
    config = CASES[name].make(tmp_path)
    result = cli("status", "--config", str(config))
    assert result.code == 2
    assert_one_line_naming(result, "config")


def test_a_secret_file_given_to_a_client_must_be_text(cli: Cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\xff\x00\x80")
    result = cli("status", "--node", "127.0.0.1:1", "--secret-file", str(secret))
    assert result.code == 2
    assert_one_line_naming(result, "--secret-file")


@pytest.mark.parametrize(
    "name", ["scrub_interval inf", "config is a directory", "data_dir is a file"]
)
def test_a_real_serve_process_says_one_line(tmp_path: Path, name: str) -> None:
    config = CASES[name].make(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "trioblock", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(),
    )
    assert done.returncode == 2, done.stderr
    assert_one_line_naming(Result(done.returncode, done.stdout, done.stderr), CASES[name].key)


def test_a_metrics_port_in_use_fails_in_one_line(cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config, _ = write_node_files(tmp_path, 0)
        with interrupt_after(10):
            result = cli("serve", "--config", str(config), "--metrics", f"127.0.0.1:{port}")
    assert result.code == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} for metrics" in lines[0]
    assert "Group" not in result.stderr
    assert not (tmp_path / "meta").exists(), "the node was opened before the port was bound"


def test_the_probe_base_configuration_is_good(tmp_path: Path) -> None:
    # Every case above is one change away from this file, which must start.
    config, secret = write_node_files(tmp_path, 0)
    assert secret.read_text().strip() == SECRET_HEX
    with subprocess.Popen(
        [sys.executable, "-m", "trioblock", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    ) as proc:
        try:
            assert proc.stdout is not None
            assert "ready" in proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)
    assert proc.returncode == 0


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "1e999", "soon"])
def test_command_line_durations_are_finite_and_positive(
    cli: Cli, tmp_path: Path, value: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    target = ["--node", "127.0.0.1:1", "--secret-file", str(secret)]
    for args in (["status", *target, "--timeout", value], ["repair", *target, "--interval", value]):
        result = cli(*args)
        assert result.code == 2, result.stderr
        assert "bad duration" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_config_without_read_permission(cli: Cli, tmp_path: Path) -> None:
    config, _ = write_node_files(tmp_path, 0)
    config.chmod(0)
    for command in ("serve", "status"):
        result = cli(command, "--config", str(config))
        assert result.code == 2
        assert_one_line_naming(result, "config")
        assert "Permission denied" in result.stderr


@pytest.mark.parametrize(("extra", "expected"), [("", True), ("metadata_fsync = false\n", False)])
def test_metadata_fsync_is_read_from_the_node_file(
    tmp_path: Path, extra: str, expected: bool
) -> None:
    config, _ = write_node_files(tmp_path, 0, extra)
    assert load_node_file(config).config.metadata_fsync is expected


@pytest.mark.parametrize(
    ("line", "field", "seconds"),
    [
        ('rpc_timeout = "5s"', "rpc_timeout", 5.0),
        ('gc_delay = "10m"', "gc_delay", 600.0),
        ('gc_delay = "0s"', "gc_delay", 0.0),
        ('ref_sync_interval = "1h30m"', "ref_sync_interval", 5400.0),
        ('scrub_interval = "2d"', "scrub_interval", 2 * 86400.0),
        ("rpc_timeout = 7.5", "rpc_timeout", 7.5),
    ],
)
def test_durations_in_the_node_file_take_units_as_capacities_do(
    tmp_path: Path, line: str, field: str, seconds: float
) -> None:
    config, _ = write_node_files(tmp_path, 0, line + "\n")
    assert getattr(load_node_file(config).config, field) == seconds


@pytest.mark.parametrize(
    "line", ['rpc_timeout = "5 parsecs"', 'rpc_timeout = "0s"', 'gc_delay = "soon"']
)
def test_a_bad_duration_in_the_node_file_names_its_key(tmp_path: Path, line: str) -> None:
    config, _ = write_node_files(tmp_path, 0, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_node_file(config)
    assert info.value.field == line.split()[0]
