"""Development sessions: ``nox -s lint types tests`` before a push, ``nox -s bench`` for speed."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "types", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pytest-trio, hypothesis)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[dev]")
    session.run("mypy", "trioblock")


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput benchmarks; each reports ratios against a baseline from the same run."""
    session.install("-e", ".")
    # `nox -s bench` runs them all; `nox -s bench -- local --quick` one, with options.
    names = ["local", "cluster", "scrub", "membership", "app"]
    chosen = [a for a in session.posargs if a in names] or names
    options = [a for a in session.posargs if a not in names]
    for name in chosen:
        session.run("python", f"benchmarks/{name}.py", *options)
