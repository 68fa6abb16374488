"""Helpers of the CLI tests: real ``trioblock serve`` processes on loopback.

- ``start_node(root, extra="", *, port=None, node_id="n0")``: a context manager that
  writes ``node.toml`` and a secret file in ``root``, starts ``python -m trioblock
  serve`` as a subprocess on ``port`` (default: a free one; metrics on another), waits
  (bounded) for its ready line and, on exit, stops it (SIGINT, then kill if it
  lingers) whatever happened;
- ``run_cli(*args)`` / ``run_cli_bytes(*args)``: ``python -m trioblock ARGS`` as a
  subprocess, with a clean environment;
- ``Result``: exit code and output of one command.

The fixtures built on these live in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_TIMEOUT = 20.0
READY_RE = re.compile(r"ready on (\S+):(\d+) \(metrics (http://\S+/metrics)\)")
SECRET_HEX = "5f" * 32
SERVE = (sys.executable, "-m", "trioblock", "serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRIOBLOCK_SECRET", "COLUMNS")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class NodeProcess:
    """A running ``trioblock serve`` and the files around it."""

    proc: subprocess.Popen[str]
    root: Path
    config: Path
    secret_file: Path
    data_dir: Path
    port: int
    metrics_url: str
    stdout_lines: queue.Queue[str | None]
    stderr_path: Path

    @property
    def target(self) -> list[str]:
        return ["--config", str(self.config)]

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line (``None`` at end of output); ``queue.Empty`` on timeout."""
        return self.stdout_lines.get(timeout=timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def write_node_files(
    root: Path, port: int, extra: str = "", *, node_id: str = "n0"
) -> tuple[Path, Path]:
    """``node.toml`` (plus ``extra`` TOML lines at the end) and its secret file in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    secret = root / "secret"
    secret.write_text(SECRET_HEX + "\n")
    config = root / "node.toml"
    config.write_text(
        "\n".join(
            [
                f'node_id = "{node_id}"',
                'metadata_dir = "meta"',
                'data_dir = "data"',
                f'rpc_bind_addr = "127.0.0.1:{port}"',
                'rpc_secret_file = "secret"',
                "data_fsync = false",
                "scrub_tranquility = 0",
                "resync_tranquility = 0",
                extra,
                "",
            ]
        )
    )
    return config, secret


@contextmanager
def start_node(
    root: Path, extra: str = "", *, port: int | None = None, node_id: str = "n0"
) -> Iterator[NodeProcess]:
    port = free_port() if port is None else port
    config, secret = write_node_files(root, port, extra, node_id=node_id)
    stderr_path = root / "serve.stderr"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [*SERVE, "--config", str(config), "--metrics", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=cli_env(),
            cwd=root,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        ready = None
        while ready is None:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"serve exited early:\n{stderr_path.read_text()}")
            ready = READY_RE.search(line)
        assert int(ready.group(2)) == port
        yield NodeProcess(
            proc,
            root,
            config,
            secret,
            root / "data",
            port,
            ready.group(3),
            lines,
            stderr_path,
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    """``python -m trioblock ARGS`` in a subprocess (text output)."""
    done = subprocess.run(
        [sys.executable, "-m", "trioblock", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env or cli_env(),
    )
    return Result(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode())


def run_cli_bytes(*args: str) -> tuple[int, bytes, str]:
    """Like :func:`run_cli`, keeping stdout as bytes (for ``get``)."""
    done = subprocess.run(
        [sys.executable, "-m", "trioblock", *args],
        capture_output=True,
        timeout=60,
        env=cli_env(),
    )
    return done.returncode, done.stdout, done.stderr.decode()
