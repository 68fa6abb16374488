"""Commands acting on single blocks or the resync queue of a running node.

``put FILE`` stores a file as one block (streamed to the node as an admin body, so up to
the node's ``max_block_size``) and, unless ``--no-ref``, takes a reference on it in the
node's own count (a low-level ``incref`` on that node, not a cluster reference);
``get HASH`` writes a block to stdout or ``-o FILE`` and checks its hash again on this
side; ``retry-now HASH|--all`` clears the back-off of blocks in error; ``purge HASH
--yes`` forgets an unrecoverable block; ``set-resync`` changes the resync workers.

Exit codes: 1 when the block is unknown (``get`` of a missing block, ``retry-now`` of a
block that was not in error, ``purge`` of a block the node knew nothing about) or the
node refused; 2 for a malformed hash or a missing ``--yes``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._core.hashing import Hash, blake2sum
from .client import AdminClient, add_target_arguments, run_session
from .output import CliError, Exit, Output, human_bytes, key_value_table


def _hash(text: str) -> Hash:
    try:
        return Hash.from_hex(text.strip())
    except ValueError:
        raise CliError(Exit.USAGE, f"not a block hash (64 hex digits): {text!r}") from None


def _hash_or_usage(args: argparse.Namespace) -> Hash | int:
    try:
        return _hash(args.hash)
    except CliError as exc:
        Output().error(exc.message)
        return exc.code


# ---------------------------------------------------------------------------------------
# put


def configure_put(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="file to store as one block ('-' for stdin)")
    parser.add_argument(
        "--no-ref",
        action="store_true",
        help=(
            "take no reference (a block never referenced stays until `trioblock repair` "
            "collects it; `trioblock ref add` references a block cluster-wide)"
        ),
    )
    parser.add_argument(
        "--no-compress", action="store_true", help="store plain even if compression is on"
    )
    add_target_arguments(parser)


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(Exit.USAGE, f"cannot read {name}: {exc.strerror}") from None


def run_put(args: argparse.Namespace) -> int:
    try:
        data = _read_input(args.file)
    except CliError as exc:
        Output().error(exc.message)
        return exc.code

    async def session(client: AdminClient, out: Output) -> int:
        info = await client.call("info")
        if len(data) > info["max_block_size"]:
            raise CliError(
                Exit.FAILED,
                f"{args.file} is {human_bytes(len(data))}, more than the node's "
                f"max_block_size ({human_bytes(info['max_block_size'])})",
            )
        reply, _ = await client.call_with_body(
            "put", data, compress=not args.no_compress, incref=not args.no_ref
        )
        if reply["hash"] != blake2sum(data).hex():
            raise CliError(Exit.FAILED, f"the node stored the block as {reply['hash']}?")
        if out.json:
            out.emit_json(reply)
        else:
            out.say(reply["hash"])
            out.note(f"stored {human_bytes(reply['size'])}, refcount {reply['refcount']}")
        return Exit.OK

    return run_session(args, session)


# ---------------------------------------------------------------------------------------
# get


def configure_get(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hash", help="the block's hash (64 hex digits)")
    parser.add_argument("-o", "--output", type=Path, help="write the block here (default: stdout)")
    add_target_arguments(parser)


def run_get(args: argparse.Namespace) -> int:
    h = _hash_or_usage(args)
    if isinstance(h, int):
        return h
    if args.output is None and sys.stdout.isatty():
        Output().error("refusing to write a block to a terminal: redirect stdout or use -o FILE")
        return Exit.USAGE

    async def session(client: AdminClient, out: Output) -> int:
        _reply, data = await client.call_with_body("get", hash=h.hex())
        if data is None:
            raise CliError(Exit.FAILED, "the node answered without the block")
        if blake2sum(data) != h:
            raise CliError(Exit.FAILED, f"the node sent bytes that do not hash to {h.hex()}")
        if args.output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return Exit.OK
        try:
            args.output.write_bytes(data)
        except OSError as exc:
            raise CliError(Exit.FAILED, f"cannot write {args.output}: {exc.strerror}") from None
        if out.json:
            out.emit_json({"hash": h.hex(), "size": len(data), "path": str(args.output)})
        else:
            out.note(f"wrote {human_bytes(len(data))} to {args.output}")
        return Exit.OK

    return run_session(args, session)


# ---------------------------------------------------------------------------------------
# retry-now


def configure_retry_now(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("hash", nargs="?", help="the block to retry (64 hex digits)")
    which.add_argument("--all", action="store_true", help="every block in error")
    add_target_arguments(parser)


def run_retry_now(args: argparse.Namespace) -> int:
    h: Hash | None = None
    if not args.all:
        parsed = _hash_or_usage(args)
        if isinstance(parsed, int):
            return parsed
        h = parsed

    async def session(client: AdminClient, out: Output) -> int:
        if h is None:
            reply = await client.call("retry_now", all=True)
        else:
            reply = await client.call("retry_now", hash=h.hex())
        if out.json:
            out.emit_json(reply)
        if h is None:
            if not out.json:
                out.say(f"queued {reply['queued']} block(s) in error for an immediate resync")
            return Exit.OK
        if not reply["had_error"]:
            if not out.json:
                out.error(f"block {h.hex()} was not in error (queued for a check anyway)")
            return Exit.FAILED
        if not out.json:
            out.say(f"block {h.hex()} queued for an immediate resync")
        return Exit.OK

    return run_session(args, session)


# ---------------------------------------------------------------------------------------
# purge


def configure_purge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hash", help="the block to forget (64 hex digits)")
    parser.add_argument(
        "--yes",
        action="store_true",
        help="really: drop its references, error and queue entries and local copies",
    )
    add_target_arguments(parser)


def run_purge(args: argparse.Namespace) -> int:
    h = _hash_or_usage(args)
    if isinstance(h, int):
        return h
    if not args.yes:
        Output().error(
            "purge deletes the block's references and local copies for good; add --yes to confirm"
        )
        return Exit.USAGE

    async def session(client: AdminClient, out: Output) -> int:
        reply = await client.call("purge", hash=h.hex())
        if out.json:
            out.emit_json(reply)
        elif reply["known"]:
            out.print(
                key_value_table(
                    "purged",
                    [
                        ("block", h.hex()),
                        ("references dropped", reply["refcount"]),
                        ("was in error", "yes" if reply["had_error"] else "no"),
                        ("local copies removed", reply["removed_copies"]),
                    ],
                )
            )
        else:
            out.error(f"block {h.hex()} is unknown to this node (nothing to purge)")
        return Exit.OK if reply["known"] else Exit.FAILED

    return run_session(args, session)


# ---------------------------------------------------------------------------------------
# set-resync


def configure_set_resync(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="resync workers, 1..8 (persisted)")
    parser.add_argument(
        "--tranquility", type=int, help="sleep this × the mean step time between steps"
    )
    add_target_arguments(parser)


def run_set_resync(args: argparse.Namespace) -> int:
    changes = {
        k: v
        for k, v in (("workers", args.workers), ("tranquility", args.tranquility))
        if v is not None
    }

    async def session(client: AdminClient, out: Output) -> int:
        reply = await client.call("set_resync", **changes)
        if out.json:
            out.emit_json(reply)
        else:
            out.say(f"resync: {reply['workers']} worker(s), tranquility {reply['tranquility']}")
        return Exit.OK

    return run_session(args, session)


__all__ = [
    "configure_get",
    "configure_purge",
    "configure_put",
    "configure_retry_now",
    "configure_set_resync",
    "run_get",
    "run_purge",
    "run_put",
    "run_retry_now",
    "run_set_resync",
]
