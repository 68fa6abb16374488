"""The public surface: ``__all__``, docstrings, and the direction of imports between layers."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import types
from pathlib import Path

import pytest

import trioblock

PACKAGE_ROOT = Path(trioblock.__file__).parent
PUBLIC_NAMESPACES = ["trioblock", "trioblock.errors", "trioblock.testing"]

#: DESIGN §3: the BlockManager members users call.
MANAGER_MEMBERS = [
    "apply_layout",
    "layout_status",
    "layout_history",
    "add_reference",
    "remove_reference",
    "references",
    "sync_references",
    "put_block",
    "rpc_put_block",
    "get_block",
    "stream_block",
    "incref",
    "decref",
    "transaction",
    "get_block_rc",
    "has_local_block",
    "rc_len",
    "resync_queue_len",
    "resync_errors_len",
    "list_resync_errors",
    "retry_now",
    "purge",
    "set_resync_workers",
    "set_resync_tranquility",
    "scrub",
    "scrub_status",
    "repair",
    "rebalance",
    "workers",
]


def exported_names(module: types.ModuleType) -> set[str]:
    """Public attributes of a namespace (submodules only count when listed)."""
    listed = set(getattr(module, "__all__", ()))
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not (isinstance(value, types.ModuleType) and name not in listed)
        and name != "annotations"  # from __future__ import annotations
    }


@pytest.mark.parametrize("name", PUBLIC_NAMESPACES)
def test_all_matches_what_the_namespace_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert len(module.__all__) == len(set(module.__all__)), "duplicates in __all__"
    assert set(module.__all__) == exported_names(module)


def is_type_alias(value: object) -> bool:
    """``Callable[...]`` and friends: documented by a comment, they carry no docstring."""
    return type(value).__module__ in ("typing", "collections.abc", "types") and hasattr(
        value, "__origin__"
    )


@pytest.mark.parametrize("name", PUBLIC_NAMESPACES)
def test_every_public_name_has_a_docstring(name: str) -> None:
    module = importlib.import_module(name)
    assert inspect.getdoc(module)
    undocumented = [
        n
        for n in module.__all__
        if (inspect.isclass(getattr(module, n)) or callable(getattr(module, n)))
        and not is_type_alias(getattr(module, n))
        and not (getattr(module, n).__doc__ or "").strip()
    ]
    assert undocumented == []


def test_design_names_are_exported() -> None:
    for name in [
        "Config",
        "DataDir",
        "Hash",
        "blake2sum",
        "open_block_manager",
        "BlockManager",
        "StaticLayout",
        "CorruptBlockError",
        "MissingBlockError",
        "QuorumError",
        "ProtocolError",
        "AuthenticationError",
        "ConfigError",
        "TrioblockError",
    ]:
        assert name in trioblock.__all__, name
    for name in [
        "CorruptBlockError",
        "MissingBlockError",
        "QuorumError",
        "ProtocolError",
        "AuthenticationError",
        "ConfigError",
    ]:
        assert issubclass(getattr(trioblock.errors, name), trioblock.TrioblockError)


#: Documented additions to the contract's table.
MANAGER_ADDITIONS = [
    "config",
    "node_id",
    "layout",
    "metrics",
    "is_gateway",
    "sync_layout",
    "forget_node",
    "ref_len",
    "get_rc_entry",
    "list_resync_queue",
    "retry_all_now",
    "local_block_path",
    "put_blocks",
    "resync_workers",
    "resync_tranquility",
    "wait_scrub_runs",
    "start_operation",
    "operation_status",
    "now_msec",
    "uptime",
    "data_layout",
    "data_dir_usage",
    "clear_data_dir",
    "buffer_in_use",
    "rpc_stats",
    "stored",
    "missing_blocks",
    "get_blocks",
    "add_references",
    "remove_references",
    "owned_by",
    "remove_owner",
    "block_info",
    "cluster_block_info",
    "repair_refcounts",
    "node_stats",
    "cluster_stats",
    "snapshot_metadata",
    "metadata_snapshots",
]

#: Internals that once were public attributes of ``BlockManager``.
MANAGER_INTERNALS = [
    "db",
    "store",
    "rpc",
    "clock",
    "budget",
    "hedge",
    "resync",
    "db_limiter",
    "cpu_limiter",
    "serve_get_block",
    "serve_put_block",
    "serve_need_block",
    "resync_block",
    "add_worker",
    "put_to_resync",
]


@pytest.mark.parametrize("member", MANAGER_MEMBERS + MANAGER_ADDITIONS[4:])
def test_block_manager_member_exists_with_a_docstring(member: str) -> None:
    value = getattr(trioblock.BlockManager, member, None)
    assert value is not None, f"BlockManager.{member} is missing"
    assert (value.__doc__ or "").strip(), f"BlockManager.{member} has no docstring"


async def test_block_manager_public_surface_is_the_contract_plus_additions(
    tmp_path: Path,
) -> None:
    config = trioblock.Config(node_id="n", metadata_dir=tmp_path / "m", data_dir=tmp_path / "d")
    async with trioblock.open_block_manager(config) as bm:
        public = {name for name in dir(bm) if not name.startswith("_")}
        assert public == set(MANAGER_MEMBERS) | set(MANAGER_ADDITIONS)
        for name in MANAGER_INTERNALS:
            assert not hasattr(bm, name), name


def test_implementation_types_are_not_exported() -> None:
    for name in ["DataBlock", "BlockHeader", "ErrorCounter", "Completed"]:
        assert not hasattr(trioblock, name), name


def test_what_public_methods_return_is_exported() -> None:
    for name in [
        "ScrubStatus",
        "ScrubState",
        "RepairReport",
        "RebalanceReport",
        "OperationStatus",
        "OperationState",
        "WorkerInfo",
        "QueuedResync",
        "DataDirUsage",
        "DataDirState",
        "DataLayout",
        "RcEntry",
        "ResyncErrorInfo",
        "RpcStats",
        "StreamHandler",
        "BlockError",
        "NodeClosedError",
        "TrioblockError",
    ]:
        assert name in trioblock.__all__, name
    assert issubclass(trioblock.NodeClosedError, trioblock.TrioblockError)


def test_version_comes_from_the_package_metadata() -> None:
    assert trioblock.__version__ == importlib.metadata.version("trioblock")


# -- import direction ------------------------------------------------------------------

#: Rank of each layer: a module may import its own layer and the ones below.
LAYERS = {"errors": 0, "_core": 1, "_storage": 2, "_net": 3, "_node": 4}
EDGE = 5  # _cli, testing, metrics, the package namespace itself, anything else


def layer_of(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "trioblock"
    if len(parts) == 1:
        return EDGE  # the public namespace re-exports everything
    return LAYERS.get(parts[1], EDGE)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str | None = None) -> list[str]:
    """Every module an ``import``/``from`` anywhere in the file refers to (absolute names)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if node.module is None:
                # "from .. import errors": each name may be a submodule.
                found.extend(f"{target}.{alias.name}" for alias in node.names)
            else:
                found.append(target)
    return found


SOURCES = sorted(PACKAGE_ROOT.rglob("*.py"))


def test_there_are_sources_in_every_layer() -> None:
    layers = {layer_of(module_name(p)) for p in SOURCES}
    assert layers >= {0, 1, 2, 4}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_layers_only_import_downwards(path: Path) -> None:
    own = layer_of(module_name(path))
    upward = [
        target
        for target in imported_modules(path)
        if target.split(".")[0] == "trioblock" and layer_of(target) > own
    ]
    assert upward == [], f"{module_name(path)} (layer {own}) imports upwards: {upward}"


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if layer_of(module_name(p)) <= 1],
    ids=lambda p: str(p.relative_to(PACKAGE_ROOT)),
)
def test_core_does_no_io_nor_trio(path: Path) -> None:
    # (``threading`` is allowed for ``threading.local`` caches of zstd contexts: pure
    # functions called from worker threads, no thread is started in core.)
    forbidden = {"trio", "trio_util", "sqlite3", "sqlite_utils", "socket", "asyncio"}
    used = {t.split(".")[0] for t in imported_modules(path)}
    assert used & forbidden == set()


NODE_MODULES = {module_name(p): p for p in SOURCES if module_name(p).startswith("trioblock._node.")}


def node_import_graph() -> dict[str, set[str]]:
    """Which ``_node`` module imports which (type-checking imports included)."""
    graph: dict[str, set[str]] = {}
    for name, path in NODE_MODULES.items():
        graph[name] = {t for t in imported_modules(path) if t in NODE_MODULES and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_node_modules_import_each_other_without_cycles() -> None:
    graph = node_import_graph()
    assert len(graph) > 10
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between _node modules: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_namespace_holds_no_future_import() -> None:
    assert "annotations" not in dir(trioblock)


def test_strategies_without_hypothesis_say_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins
    import sys

    real_import = builtins.__import__

    def no_hypothesis(name: str, *args: object, **kwargs: object) -> object:
        if name == "hypothesis" or name.startswith("hypothesis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delitem(sys.modules, "trioblock.testing.strategies", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_hypothesis)
    with pytest.raises(ModuleNotFoundError, match=r"install trioblock\[testing\]"):
        importlib.import_module("trioblock.testing.strategies")


# -- faces and private names -----------------------------------------------------------

#: The edges that reach the node and storage layers only through their faces.
FACE_EDGES = ("trioblock._cli", "trioblock.testing")
#: The layers with a face (``__init__``) for the edges.
FACED_LAYERS = ("trioblock._node", "trioblock._storage")


def is_module(name: str) -> bool:
    """Whether ``name`` (absolute) is a module or package of trioblock."""
    rel = Path(*name.split(".")[1:])
    return (PACKAGE_ROOT / rel).with_suffix(".py").is_file() or (
        PACKAGE_ROOT / rel / "__init__.py"
    ).is_file()


def private_names_imported(path: Path, name: str | None = None) -> list[str]:
    """``from M import _x`` where ``M`` is another trioblock module and ``_x`` not a module."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        if target.split(".")[0] != "trioblock" or target == name:
            continue
        found.extend(
            f"{target}.{alias.name}"
            for alias in node.names
            if alias.name.startswith("_")
            and not alias.name.startswith("__")
            and not is_module(f"{target}.{alias.name}")
        )
    return found


def behind_the_faces(path: Path, name: str | None = None) -> list[str]:
    """The modules of a faced layer, other than its face, that ``path`` imports."""
    inner = tuple(f"{layer}." for layer in FACED_LAYERS)
    return [t for t in imported_modules(path, name) if t.startswith(inner)]


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if module_name(p).startswith(FACE_EDGES)],
    ids=lambda p: str(p.relative_to(PACKAGE_ROOT)),
)
def test_edges_import_the_node_and_storage_layers_through_their_faces(path: Path) -> None:
    found = behind_the_faces(path)
    assert found == [], f"{module_name(path)} imports {found}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    assert private_names_imported(path) == []


def test_the_face_and_private_name_checks_catch_offenders(tmp_path: Path) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text(
        "from trioblock._node.manager import BlockManager, _hidden\n"
        "from trioblock import _node\n"
        "from trioblock._node import open_block_manager\n"
    )
    name = "trioblock._cli.fake"
    assert private_names_imported(fake, name) == ["trioblock._node.manager._hidden"]
    assert behind_the_faces(fake, name) == ["trioblock._node.manager"]
