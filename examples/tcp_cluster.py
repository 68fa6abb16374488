"""Three trioblock nodes as three processes on 127.0.0.1, over TCP with a shared secret.

Run it with ``python examples/tcp_cluster.py`` (from anywhere, once trioblock is
installed). It narrates:

1. three node configs (TOML) written to a temporary directory, with free ports and a
   random cluster secret in a file; three ``python -m trioblock serve --config nX.toml``
   processes started, and their ``ready`` lines awaited;
2. an application opens a *gateway* into the cluster (``trioblock.open_gateway`` over a
   ``TcpTransport`` listing the nodes, with the nodes' layout and secret): it puts blocks
   (replication factor 3, write quorum 2), references each under an owner, and reads
   them back; every node holds a copy;
3. n2 stopped with SIGTERM; puts and references still reach the quorum (n0 + n1), reads
   still work;
4. n2 restarted on the same directories: it missed the blocks and references written
   while it was down; its anti-entropy pass pulls the references from n0 and n1, and its
   resync fetches the blocks;
5. every node stopped with SIGTERM, exit codes checked.

The node processes are always stopped, whatever happens (an error, Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

import trioblock
from trioblock import Hash

log = logging.getLogger("example")

NODES = ("n0", "n1", "n2")
#: Seconds allowed for a node to print its ready line, and to stop after a signal.
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
#: Seconds allowed for one request to a node, for n2 to catch up, and for the whole run.
REQUEST_TIMEOUT = 5.0
CATCH_UP_TIMEOUT = 30.0
RUN_TIMEOUT = 90.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (held open together, then released).

    Every node must know every address before any node starts, so the ports are chosen
    here; another program could take one before its node binds it (the node would then
    exit 1, "port in use", and the example fail): good enough for a demo.
    """
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_configs(root: Path, ports: dict[str, int]) -> dict[str, Path]:
    """A secret file and one ``nX.toml`` per node; paths in them are relative to the file."""
    secret = root / "secret"
    secret.write_text(secrets.token_hex(32) + "\n")  # 64 hex digits, as Garage's rpc_secret
    secret.chmod(0o600)
    peers = "\n".join(f'{node} = "127.0.0.1:{port}"' for node, port in ports.items())
    configs = {}
    for node, port in ports.items():
        config = root / f"{node}.toml"
        config.write_text(
            f'node_id = "{node}"\n'
            f'metadata_dir = "{node}/meta"\n'
            f'data_dir = "{node}/data"\n'
            f'rpc_bind_addr = "127.0.0.1:{port}"\n'
            'rpc_secret_file = "secret"\n'
            "replication_factor = 3\n"
            "write_quorum = 2\n"
            "rpc_timeout = 5.0\n"
            "\n[peers]\n" + peers + "\n"
        )
        configs[node] = config
    return configs


class NodeProcess:
    """One ``python -m trioblock serve`` subprocess; its stderr (the log) goes to a file."""

    def __init__(self, node: str, config: Path) -> None:
        self.node = node
        self.config = config
        self.log_path = config.with_suffix(".log")
        self.proc: subprocess.Popen[str] | None = None
        self._lines: trio.MemoryReceiveChannel[str] | None = None

    def _spawn(self) -> subprocess.Popen[str]:
        with open(self.log_path, "a") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "trioblock", "serve", "--config", str(self.config)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=self.config.parent,
            )

    async def start(self, nursery: trio.Nursery) -> str:
        """Start the node and return its ready line (``RuntimeError`` if none comes in time)."""
        self.proc = await trio.to_thread.run_sync(self._spawn)
        send, self._lines = trio.open_memory_channel[str](16)
        nursery.start_soon(self._pump, self.proc, send)
        with trio.move_on_after(READY_TIMEOUT):
            async for line in self._lines:
                if " ready" in line:
                    return line
                # anything else on stdout before the ready line is unexpected: keep it
                log.info("%s says: %s", self.node, line)
            raise RuntimeError(f"{self.node} exited before it was ready:\n{self.log_tail()}")
        raise RuntimeError(f"{self.node} not ready within {READY_TIMEOUT}s:\n{self.log_tail()}")

    @staticmethod
    async def _pump(proc: subprocess.Popen[str], send: trio.MemorySendChannel[str]) -> None:
        """Forward the node's stdout lines (read in a thread) until it closes stdout."""
        assert proc.stdout is not None
        async with send:
            while line := await trio.to_thread.run_sync(
                proc.stdout.readline, abandon_on_cancel=True
            ):
                await send.send(line.rstrip("\n"))
        proc.stdout.close()

    async def stop(self) -> tuple[int, list[str]]:
        """SIGTERM, wait (bounded; kill if it lingers); return the exit code and last lines."""
        assert self.proc is not None and self._lines is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        said = []
        with trio.move_on_after(STOP_TIMEOUT):
            async for line in self._lines:
                said.append(line)
        code = await trio.to_thread.run_sync(self.wait_or_kill, abandon_on_cancel=True)
        return code, said

    def wait_or_kill(self) -> int:
        """Wait for the process (synchronously); kill it if it does not exit in time."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def always_stopped(nodes: dict[str, NodeProcess]) -> Iterator[None]:
    """Whatever happens inside (an error, Ctrl-C), no node process outlives the block."""
    try:
        yield
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in nodes.values():
            if node.proc is not None:
                node.wait_or_kill()


@asynccontextmanager
async def open_app_gateway(
    secret: bytes, ports: dict[str, int]
) -> AsyncIterator[trioblock.BlockManager]:
    """The application's way in: a gateway (it stores nothing) to the storage nodes.

    It needs what the nodes' files hold: the node ids and the layout (replication
    factor, write quorum), their addresses, and the secret's bytes.
    """
    layout = trioblock.StaticLayout(list(NODES), replication_factor=3, write_quorum=2)
    transport = trioblock.TcpTransport(peers={n: ("127.0.0.1", p) for n, p in ports.items()})
    async with trioblock.open_gateway(
        "example-app",
        layout=layout,
        transport=transport,
        rpc_secret=secret,
        rpc_timeout=REQUEST_TIMEOUT,
    ) as gateway:
        yield gateway


def expect(done: int, total: int, what: str) -> None:
    if done != total:
        raise RuntimeError(f"only {done}/{total} {what}")


def held_on_disk(root: Path, node: str, h: Hash) -> bool:
    """Whether ``node``'s data directory holds a copy (looking at the files, for the demo)."""
    name = h.hex()
    folder = root / node / "data" / name[:2] / name[2:4]
    return (folder / name).exists() or (folder / f"{name}.zst").exists()


async def main(root: Path, nodes: dict[str, NodeProcess], ports: dict[str, int]) -> None:
    with trio.fail_after(RUN_TIMEOUT):
        await narrate(root, nodes, ports)


async def narrate(root: Path, nodes: dict[str, NodeProcess], ports: dict[str, int]) -> None:
    secret = bytes.fromhex((root / "secret").read_text().strip())
    async with trio.open_nursery() as nursery:
        ready = await start_all(nursery, nodes)
        for line in ready:
            log.info("%s", line)
        log.info("3 nodes up: replication factor 3, write quorum 2, secret in %s", root / "secret")

        async with open_app_gateway(secret, ports) as gw:
            first = {}
            for i in range(4):
                data = f"block {i} ".encode() * 4000
                h = await gw.put_block(data)  # returns once 2 of the 3 nodes hold it
                await gw.add_reference(h, "example/first")  # counted on every storage node
                first[h] = data
            log.info(
                "put and referenced %d blocks through a gateway (each acknowledged by a quorum)",
                len(first),
            )
            ok = sum([await gw.get_block(h) == data for h, data in first.items()])
            expect(ok, len(first), "blocks read back")
            log.info("read %d/%d blocks back, verified against their hash", ok, len(first))
            for node in NODES:  # the third copy of each block lands in the background
                await wait_held(root, node, first)
            for node in NODES:
                held = sum(held_on_disk(root, node, h) for h in first)
                log.info("%s holds %d/%d of them on its disk", node, held, len(first))

            code, said = await nodes["n2"].stop()
            log.info("stopped n2 with SIGTERM: it said %r, exit code %d", " / ".join(said), code)

            missed = {}
            for _ in range(4):
                data = os.urandom(64 * 1024)
                h = await gw.put_block(data)
                await gw.add_reference(h, "example/second")
                missed[h] = data
            log.info(
                "put and referenced %d more blocks with n2 down: quorum reached (n0 + n1)",
                len(missed),
            )
            ok = sum([await gw.get_block(h) == data for h, data in missed.items()])
            expect(ok, len(missed), "blocks read back with n2 down")
            log.info("read %d/%d of them back", ok, len(missed))

            log.info("%s", await nodes["n2"].start(nursery))
            on_disk = sum(held_on_disk(root, "n2", h) for h in missed)
            log.info(
                "restarted n2: it holds %d/%d of the blocks written while it was down",
                on_disk,
                len(missed),
            )
            await wait_held(root, "n2", missed)
            log.info(
                "n2 caught up by itself: anti-entropy pulled the references it missed and its "
                "resync fetched the %d blocks from n0/n1",
                len(missed),
            )
            ok = sum([await gw.get_block(h) == data for h, data in missed.items()])
            expect(ok, len(missed), "blocks read back after the restart")

        codes = {}
        for node in NODES:
            codes[node], said = await nodes[node].stop()
        summary = ", ".join(f"{node}={code}" for node, code in codes.items())
        if any(codes.values()):
            raise RuntimeError(f"a node did not stop cleanly: exit codes {summary}")
        log.info("cluster stopped cleanly: exit codes %s", summary)


async def wait_held(root: Path, node: str, blocks: dict[Hash, bytes]) -> None:
    """Poll ``node``'s data directory until it holds every block (bounded).

    Polling, because the files are written by another process: nothing here can wait
    for an event.
    """
    with trio.fail_after(CATCH_UP_TIMEOUT):
        while not all(held_on_disk(root, node, h) for h in blocks):  # noqa: ASYNC110
            await trio.sleep(0.2)


async def start_all(nursery: trio.Nursery, nodes: dict[str, NodeProcess]) -> list[str]:
    """Start every node at once; return their ready lines."""
    ready: dict[str, str] = {}

    async def start(node: NodeProcess) -> None:
        ready[node.node] = await node.start(nursery)

    async with trio.open_nursery() as starting:
        for node in nodes.values():
            starting.start_soon(start, node)
    return [ready[n] for n in sorted(ready)]


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C (possibly inside the exception groups of Trio's nurseries)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def run() -> int:
    with tempfile.TemporaryDirectory(prefix="trioblock-tcp-") as tmp:
        root = Path(tmp)
        ports = dict(zip(NODES, free_ports(len(NODES)), strict=True))
        configs = write_configs(root, ports)
        nodes = {node: NodeProcess(node, configs[node]) for node in NODES}
        with always_stopped(nodes):
            try:
                trio.run(main, root, nodes, ports)
            except BaseException as exc:
                if interrupted(exc):
                    print("interrupted: the nodes were stopped", file=sys.stderr)
                    return 130
                for node in nodes.values():
                    print(f"--- {node.node} log (tail) ---\n{node.log_tail()}", file=sys.stderr)
                raise
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(relativeCreated)6.0fms %(name)-8s %(message)s",
    )
    logging.getLogger("trioblock.net").setLevel(logging.WARNING)
    sys.exit(run())
