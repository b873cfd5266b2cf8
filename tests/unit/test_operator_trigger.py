"""Trigger rules: strictly-greater threshold, debounce, maxDelay, cooldown, suspend, one run."""

from __future__ import annotations

from dataclasses import replace

from kubetrain_operator.decisions.trigger import Action, TriggerInput, crossing_labels, decide

BASE = TriggerInput(
    now=1000.0,
    threshold=200,
    debounce=0.0,
    cooldown=0.0,
    max_delay=600.0,
    initial_training=True,
    suspended=False,
    active_run=False,
    source_ready=True,
    has_baseline=True,
    live_objects=5000,
    changes={},
)


def test_exactly_threshold_does_not_trigger_and_one_more_does() -> None:
    assert decide(replace(BASE, changes={"7": 200})).action is Action.IDLE
    d = decide(replace(BASE, changes={"7": 201, "3": 5}))
    assert d.action is Action.LAUNCH
    assert d.crossing == (("7", 201),)
    assert "7=201" in d.trigger_reason


def test_many_labels_below_threshold_do_not_trigger() -> None:
    changes = {str(i): 150 for i in range(10)}
    assert decide(replace(BASE, changes=changes)).action is Action.IDLE


def test_crossing_labels_sorted_most_changed_first() -> None:
    assert crossing_labels({"a": 300, "b": 500, "c": 300, "d": 1}, 200) == (
        ("b", 500),
        ("a", 300),
        ("c", 300),
    )


def test_one_run_at_a_time() -> None:
    d = decide(replace(BASE, changes={"7": 999}, active_run=True))
    assert d.action is Action.WAIT


def test_not_ready_source_waits() -> None:
    assert decide(replace(BASE, changes={"7": 999}, source_ready=False)).action is Action.WAIT


def test_debounce_waits_for_quiet_then_launches() -> None:
    inp = replace(BASE, changes={"7": 250}, debounce=10.0, last_change_time=995.0, crossed_at=990.0)
    d = decide(inp)
    assert d.action is Action.WAIT and d.crossed and d.wake_at == 1005.0
    assert decide(replace(inp, now=1005.0)).action is Action.LAUNCH


def test_max_delay_caps_debounce_under_a_steady_trickle() -> None:
    inp = replace(
        BASE,
        changes={"7": 250},
        debounce=10.0,
        max_delay=60.0,
        last_change_time=1059.0,
        crossed_at=1000.0,
        now=1059.5,
    )
    assert decide(inp).action is Action.WAIT
    assert decide(replace(inp, now=1060.0, last_change_time=1059.9)).action is Action.LAUNCH


def test_cooldown_after_previous_run() -> None:
    inp = replace(BASE, changes={"7": 250}, cooldown=60.0, last_finish_time=980.0)
    d = decide(inp)
    assert d.action is Action.WAIT and d.wake_at == 1040.0
    assert decide(replace(inp, now=1040.0)).action is Action.LAUNCH


def test_suspend_reports_crossing_but_never_launches() -> None:
    d = decide(replace(BASE, changes={"7": 250}, suspended=True))
    assert d.action is Action.WAIT and d.crossed


def test_initial_training_with_empty_baseline() -> None:
    inp = replace(BASE, has_baseline=False, live_objects=10, changes={"1": 10})
    d = decide(inp)
    assert d.action is Action.LAUNCH and "initial" in d.trigger_reason
    assert decide(replace(inp, initial_training=False)).action is Action.IDLE
    assert decide(replace(inp, live_objects=0, changes={})).action is Action.IDLE


def test_failed_run_does_not_relaunch_until_new_changes_or_spec_update() -> None:
    inp = replace(
        BASE,
        changes={"7": 250},
        last_run_failed=True,
        last_finish_time=900.0,
        last_change_time=800.0,
    )
    assert decide(inp).action is Action.WAIT
    assert decide(replace(inp, last_change_time=950.0)).action is Action.LAUNCH
    assert decide(replace(inp, spec_changed_since_last_run=True)).action is Action.LAUNCH
