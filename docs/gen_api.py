"""Regenerate docs/api.md from the docstrings of the public API.

Run ``python docs/gen_api.py`` after changing a public name or its docstring;
``tests/test_docs.py`` fails when api.md is out of date.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from types import ModuleType

HEADER = """# API reference

Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.
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
}


def _is_alias(obj: object) -> bool:
    return type(obj).__module__ in ("typing", "collections.abc", "types") and hasattr(
        obj, "__origin__"
    )


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


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
            if name.startswith("_") or not (inspect.getdoc(member) or "").strip():
                continue
            if isinstance(member, property | staticmethod | classmethod) or inspect.isfunction(
                member
            ):
                out.append((name, member))
    return out


def render_module(module: ModuleType) -> str:
    lines = [f"## `{module.__name__}`", "", _doc(module), ""]
    for name in sorted(module.__all__):
        obj = getattr(module, name)
        if isinstance(obj, ModuleType):
            continue
        if _is_alias(obj):
            alias = repr(obj).replace("typing.", "").replace("collections.abc.", "")
            lines += [f"### type alias `{name}`", "", f"`{alias}`", "", ALIAS_DOCS[name], ""]
            continue
        kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "value"
        sig = _signature(obj) if kind == "function" else ""
        lines += [f"### {kind} `{name}{sig}`", "", _doc(obj), ""]
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for mname, member in _members(obj):
                target = member.fget if isinstance(member, property) else member
                msig = "" if isinstance(member, property) else _signature(target)
                lines += [f"#### `{name}.{mname}{msig}`", "", _doc(target), ""]
    return "\n".join(lines)


def render() -> str:
    import trioblock
    import trioblock.errors
    import trioblock.testing

    parts = [HEADER]
    for module in (trioblock, trioblock.errors, trioblock.testing):
        parts.append(render_module(module))
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("api.md")
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
