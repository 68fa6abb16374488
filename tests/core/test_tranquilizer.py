"""``Tranquilizer``: sleep tranquility × mean of the last 30 step durations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioblock._core.tranquilizer import WINDOW, Tranquilizer


def test_no_steps_means_no_delay() -> None:
    t = Tranquilizer()
    assert t.average == 0.0
    assert t.delay(10) == 0.0


def test_delay_is_tranquility_times_mean() -> None:
    t = Tranquilizer()
    for d in (1.0, 2.0, 3.0):
        t.record(d)
    assert t.average == pytest.approx(2.0)
    assert t.delay(0) == 0.0
    assert t.delay(2) == pytest.approx(4.0)


def test_only_the_last_30_steps_count() -> None:
    assert WINDOW == 30
    t = Tranquilizer()
    for _ in range(100):
        t.record(10.0)
    for _ in range(30):
        t.record(1.0)
    assert t.average == pytest.approx(1.0)


def test_negative_durations_count_as_zero() -> None:
    t = Tranquilizer()
    t.record(-5.0)
    t.record(-1.0)
    t.record(3.0)
    assert t.average == pytest.approx(1.0)


@given(st.lists(st.floats(0, 1000), min_size=1, max_size=100), st.integers(0, 100))
def test_delay_matches_a_window_model(durations: list[float], tranquility: int) -> None:
    t = Tranquilizer()
    for d in durations:
        t.record(d)
    window = durations[-30:]
    assert t.delay(tranquility) == pytest.approx(tranquility * sum(window) / len(window))
