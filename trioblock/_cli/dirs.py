"""``trioblock dir``: a running node's data directories; and the node side of them
(the ``data_dir_clear`` admin op, the ``data_dirs`` of ``status``).

- ``dir clear PATH``: mark the data directory ``PATH`` ok again (the operator's word that
  its disk works: after a disk was replaced, a filesystem repaired, permissions fixed).
  A *full* or *failing* directory takes no new blocks; the node returns it to ok by
  itself once space is freed or a probe write succeeds, and this does it at once.
  ``trioblock status`` shows each directory's state.

Exit codes: 0 done (also when the directory was ok already); 1 when ``PATH`` is not one
of the node's data directories; 3 when the node cannot be reached.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .client import AdminClient, add_target_arguments, run_session
from .output import Exit, Output

if TYPE_CHECKING:
    from .._node import BlockManager


async def data_dir_usage(bm: BlockManager) -> list[dict[str, Any]]:
    """Total and free bytes of the filesystem of each data directory, and its health
    (``state``: ok / full / failing, ``errors`` in a row, ``last_error``), as plain maps."""
    out: list[dict[str, Any]] = []
    for usage in await bm.data_dir_usage():
        entry: dict[str, Any] = {
            "path": str(usage.path),
            "read_only": usage.read_only,
            "state": usage.state.value,
            "errors": usage.errors,
            "last_error": usage.last_error,
        }
        if usage.error is not None:
            entry["error"] = usage.error
        else:
            entry.update(total=usage.total, free=usage.free)
        out.append(entry)
    return out


async def data_dir_clear(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> dict[str, Any]:
    """The ``data_dir_clear`` admin op: ``path`` back to ok; what it was."""
    path = request.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError("data_dir_clear needs a 'path': one of the node's data directories")
    was = bm.clear_data_dir(path)
    return {"path": path, "was": was.value, "state": "ok"}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dir_cmd", metavar="ACTION")
    sub.required = True
    text = "mark a full or failing data directory ok again: new blocks go there again"
    clear = sub.add_parser("clear", help=text, description=text)
    clear.add_argument("path", help="the data directory, as in the node's config")
    add_target_arguments(clear)


def run(args: argparse.Namespace) -> int:
    async def session(client: AdminClient, out: Output) -> int:
        reply = await client.call("data_dir_clear", path=args.path)
        if out.json:
            out.emit_json(reply)
        elif reply["was"] == "ok":
            out.say(f"{reply['path']} was ok already")
        else:
            out.say(f"{reply['path']}: {reply['was']} -> ok (new blocks go there again)")
        return Exit.OK

    return run_session(args, session)
