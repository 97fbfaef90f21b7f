"""Escalation limits: the sliding hourly cap, the daily budget (kept across restarts, reset at UTC midnight),
the circuit breaker."""

from __future__ import annotations

import pytest
from escalation_support import Clock

from monitor.escalation.limits import Budget, CircuitBreaker, HourlyCap


def test_hourly_cap_is_a_sliding_hour():
    cap = HourlyCap(2)
    assert [cap.try_take(t) for t in (0, 10, 20, 3599, 3600, 3610, 3611)] == [True, True, False, False, True, True, False]


def test_budget_reserves_settles_and_rolls_over_at_utc_midnight():
    clock = Clock(1_700_000_000.0)
    budget = Budget(1.0, wall_clock=clock)
    assert budget.try_reserve(0.6) and not budget.try_reserve(0.6)
    budget.settle(0.6, 0.1)
    assert budget.remaining == pytest.approx(0.9)
    assert budget.try_reserve(0.8) and not budget.try_reserve(0.2)
    clock.now += 86400
    assert budget.remaining == pytest.approx(1.0)


def test_budget_spent_today_survives_a_restart_but_not_midnight(tmp_path):
    clock = Clock(1_700_000_000.0)
    ledger = tmp_path / "state" / "escalation-budget.json"
    first = Budget(1.0, wall_clock=clock, ledger=ledger)
    assert first.try_reserve(0.5)
    first.settle(0.5, 0.7)
    restarted = Budget(1.0, wall_clock=clock, ledger=ledger)
    assert restarted.remaining == pytest.approx(0.3)
    assert not restarted.try_reserve(0.4)
    clock.now += 86400
    assert Budget(1.0, wall_clock=clock, ledger=ledger).remaining == pytest.approx(1.0)
    ledger.write_text("not json")
    assert Budget(1.0, wall_clock=clock, ledger=ledger).remaining == pytest.approx(1.0)


def test_circuit_breaker_opens_then_lets_one_trial_through():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=60, clock=clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.is_open and not breaker.allow()
    clock.now += 61
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record(False)
    assert not breaker.allow()
    clock.now += 61
    assert breaker.allow()
    breaker.record(True)
    assert not breaker.is_open and breaker.allow()
