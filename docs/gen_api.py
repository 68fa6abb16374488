"""Regenerate docs/api.md from the docstrings of the public API.

Run ``python docs/gen_api.py`` after changing a public name or its docstring;
``tests/test_docs.py`` fails when api.md is out of date.

What it renders, for every name in the ``__all__`` of ``trioblock``, ``trioblock.errors``,
``trioblock.testing`` and ``trioblock.testing.strategies``:

- functions and methods with their signature (without ``self``), marked **async** when
  they are coroutines (call them with ``await``), **async context manager** or
  **context manager** when they are used with ``async with`` / ``with``;
- classes with their docstring (those listed in :data:`CONSTRUCTED`, which applications
  build themselves, with their constructor's signature), the fields of dataclasses
  (name, type, default), the values of enums, and their public documented members
  (properties marked as such); names listed in :data:`INTERNAL` are left out;
- type aliases (``X | Y`` unions included) with what they stand for.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HEADER = """# API reference

Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.

Conventions: **async** marks a coroutine (call it with `await`); **async context manager**
marks something used with `async with` (the type after `->` is what `as` gives);
**context manager** marks something used with `with`. Signatures leave out `self`.
"""

#: Type aliases carry no docstring: what each one is for.
ALIAS_DOCS = {
    "AdminHandler": (
        "What `open_block_manager(admin_handler=...)` takes: "
        "`await handler(bm, request, body)` answers one operator request with a reply "
        "map, or a reply map and a body."
    ),
    "StreamHandler": (
        "What `Transport.serve` calls for each incoming connection: `await handler(stream)`."
    ),
    "Operation": (
        "One step of `run_operations`: any of the operation classes of this module "
        "(`Put`, `Get`, `Stop`, ... listed below), as drawn by "
        "`trioblock.testing.strategies.cluster_operations`."
    ),
}

#: Public classes' members that are plumbing for trioblock itself, not for users.
#: Classes that applications construct themselves: their heading shows the constructor's
#: signature. (Other classes are obtained from a function, as their docstring says.)
CONSTRUCTED = frozenset({"LocalLayout", "StaticLayout", "TcpTransport", "MemoryNetwork"})

INTERNAL = frozenset(
    {
        "Transaction.count",
        "RcEntry.encode",
        "RcEntry.decode",
    }
)


class _Shown:
    """An annotation string shown as written (``inspect`` would quote it)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return value
    if isinstance(value, str):
        return _Shown(value)
    return _Shown(inspect.formatannotation(value))


#: Return types of context managers, unwrapped to what ``as`` gives.
_MANAGER_WRAPPERS = (
    "AbstractAsyncContextManager[",
    "AbstractContextManager[",
    "AsyncIterator[",
    "AsyncGenerator[",
    "Iterator[",
    "Generator[",
)


def _as_target(returns: str) -> str:
    """``AsyncIterator[BlockManager]`` → ``BlockManager`` (the first type argument)."""
    for wrapper in _MANAGER_WRAPPERS:
        if returns.startswith(wrapper) and returns.endswith("]"):
            inner = returns[len(wrapper) : -1]
            depth = 0
            for i, char in enumerate(inner):
                depth += char == "["
                depth -= char == "]"
                if char == "," and depth == 0:
                    return inner[:i]
            return inner
    return returns


def _signature(obj: Any, *, drop_self: bool = False, manager: bool = False) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    params = [p.replace(annotation=_annotation(p.annotation)) for p in params]
    returns = _annotation(sig.return_annotation)
    if manager and isinstance(returns, _Shown):
        returns = _Shown(_as_target(returns.text))
    return str(sig.replace(parameters=params, return_annotation=returns))


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def _unwrapped(fn: Any) -> Any:
    return getattr(fn, "__wrapped__", fn)


def _kind_of_callable(fn: Any) -> str:
    """``async``, ``async context manager``, ``context manager`` or ``""``."""
    inner = _unwrapped(fn)
    if fn is not inner and inspect.isasyncgenfunction(inner):
        return "async context manager"  # @asynccontextmanager
    if fn is not inner and inspect.isgeneratorfunction(inner):
        return "context manager"  # @contextmanager
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inner):
        return "async"
    returns = str(getattr(inner, "__annotations__", {}).get("return", ""))
    if "AsyncContextManager" in returns:
        return "async context manager"
    if "ContextManager" in returns:
        return "context manager"
    return ""


def _marked(kind: str) -> str:
    return f"**{kind}** " if kind else ""


def _is_alias(obj: object) -> bool:
    if isinstance(obj, types.UnionType):
        return True
    return type(obj).__module__ in ("typing", "collections.abc", "types") and hasattr(
        obj, "__origin__"
    )


def _alias_text(obj: object) -> str:
    if isinstance(obj, types.UnionType) or typing.get_origin(obj) is typing.Union:
        return " | ".join(_alias_text(arg) for arg in typing.get_args(obj))
    if isinstance(obj, type):
        return obj.__name__
    return repr(obj).replace("typing.", "").replace("collections.abc.", "")


def _members(cls: type) -> list[tuple[str, object]]:
    """Public documented members, the class's own first, then inherited trioblock ones."""
    out = []
    seen: set[str] = set()
    own = [c for c in cls.__mro__ if c.__module__.startswith("trioblock")]
    for klass in own:
        for name, member in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            if name.startswith("_") or f"{cls.__name__}.{name}" in INTERNAL:
                continue
            target = member.fget if isinstance(member, property) else member
            if isinstance(target, staticmethod | classmethod):
                target = target.__func__
            if not (inspect.getdoc(target) or "").strip():
                continue
            if isinstance(member, property | staticmethod | classmethod) or inspect.isfunction(
                member
            ):
                out.append((name, member))
    return out


def _fields(cls: type) -> list[str]:
    """A dataclass's fields as ``- `name: type = default``` lines."""
    lines = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        kind = f.type if isinstance(f.type, str) else inspect.formatannotation(f.type)
        if f.default is not dataclasses.MISSING:
            default = f" = {f.default!r}"
        elif f.default_factory is not dataclasses.MISSING:
            default = " (default: empty)" if _empty_factory(f.default_factory) else ""
        else:
            default = ""
        lines.append(f"- `{f.name}: {kind}{default}`")
    return lines


def _empty_factory(factory: Callable[[], Any]) -> bool:
    try:
        value = factory()
    except Exception:
        return False
    return hasattr(value, "__len__") and len(value) == 0


def _render_class(name: str, obj: type) -> list[str]:
    sig = _signature(obj.__init__, drop_self=True) if name in CONSTRUCTED else ""
    sig = sig.removesuffix(" -> None")
    lines = [f"### class `{name}{sig}`", "", _doc(obj), ""]
    if issubclass(obj, enum.Enum):
        values = ", ".join(f"`{m.name}` (`{m.value!r}`)" for m in obj)
        return [*lines, f"Values: {values}.", ""]
    if dataclasses.is_dataclass(obj):
        fields = _fields(obj)
        if fields:
            lines += ["Fields:", "", *fields, ""]
    if issubclass(obj, BaseException):
        return lines
    for mname, member in _members(obj):
        if isinstance(member, property):
            lines += [f"#### property `{name}.{mname}`", "", _doc(member.fget), ""]
            continue
        target = member.__func__ if isinstance(member, staticmethod | classmethod) else member
        kind = _kind_of_callable(target)
        sig = _signature(
            target, drop_self=not isinstance(member, staticmethod), manager="manager" in kind
        )
        lines += [f"#### {_marked(kind)}`{name}.{mname}{sig}`", "", _doc(target), ""]
    return lines


def render_module(module: ModuleType) -> str:
    lines = [f"## `{module.__name__}`", "", _doc(module), ""]
    for name in sorted(module.__all__):
        obj = getattr(module, name)
        if isinstance(obj, ModuleType):
            lines += [f"### module `{name}`", "", f"See `{obj.__name__}`.", ""]
            continue
        if _is_alias(obj):
            text = _alias_text(obj)
            lines += [f"### type alias `{name}`", "", f"`{text}`", "", ALIAS_DOCS[name], ""]
            continue
        if inspect.isclass(obj):
            lines += _render_class(name, obj)
        elif callable(obj):
            kind = _kind_of_callable(obj)
            sig = _signature(obj, manager="manager" in kind)
            lines += [f"### {_marked(kind)}function `{name}{sig}`", "", _doc(obj), ""]
        else:
            lines += [f"### value `{name}`", "", f"`{obj!r}`"[:300], ""]
    return "\n".join(lines)


def modules() -> list[ModuleType]:
    import trioblock
    import trioblock.errors
    import trioblock.testing
    import trioblock.testing.strategies

    return [trioblock, trioblock.errors, trioblock.testing, trioblock.testing.strategies]


def render() -> str:
    parts = [HEADER]
    for module in modules():
        parts.append(render_module(module))
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("api.md")
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
