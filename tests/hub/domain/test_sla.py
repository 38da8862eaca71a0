"""SLA policies: built-in targets, loading and validation, selection rules, evaluation at several times."""

from __future__ import annotations

from typing import Any

import pytest

from hub.domain.errors import DomainError
from hub.domain.sla import (
    BUILTIN_POLICIES,
    DEFAULT_RULES,
    Policy,
    PolicyError,
    PolicyRule,
    PolicyRules,
    Target,
    evaluate,
    load_policies,
    load_rules,
    resolve_policy,
)

R = 1_795_000_000_000  # received
RAPID = BUILTIN_POLICIES["rapid_12358"]


def s(seconds: float) -> int:
    return R + round(seconds * 1000)


def test_builtin_policies_are_exactly_the_spec() -> None:
    assert {name: dict(p.targets) for name, p in BUILTIN_POLICIES.items()} == {
        "rapid_12358": {"dispatched": 60, "departed": 120, "contacted": 180, "supported": 300, "arrived": 480},
        "missing_person": {"supported": 60, "dispatched": 180, "arrived": 600, "cleared": 86400},
        "nfpa_1710": {"dispatched": 64, "departed": 144, "arrived": 384},
    }


# --- evaluation --------------------------------------------------------------------------------------------

# (case, actual dispatched time or None, now, final, expected met, expected remaining_ms); target 60 s.
DISPATCH_CASES: list[tuple[str, int | None, int, bool, bool | None, int]] = [
    ("open, before the deadline", None, s(45), False, None, 15_000),
    ("open, at the deadline", None, s(60), False, None, 0),
    ("open, 1 ms after the deadline", None, s(60.001), False, False, -1),
    ("open, long overdue", None, s(300), False, False, -240_000),
    ("met early", s(20), s(300), False, True, 40_000),
    ("met exactly at the deadline", s(60), s(300), False, True, 0),
    ("missed by 1 ms", s(60.001), s(300), False, False, -1),
    ("reached before now is irrelevant", s(20), s(10), False, True, 40_000),
    ("closed before the deadline without it", None, s(30), True, False, 30_000),
    ("closed with it", s(50), s(30), True, True, 10_000),
]


@pytest.mark.parametrize(("actual", "now", "final", "met", "remaining"), [c[1:] for c in DISPATCH_CASES],
                         ids=[c[0] for c in DISPATCH_CASES])
def test_dispatch_target_at_several_times(actual: int | None, now: int, final: bool, met: bool | None,
                                          remaining: int) -> None:
    targets = evaluate(RAPID, {"received": R, "dispatched": actual}, R, now, final=final)
    dispatched = next(t for t in targets if t.milestone == "dispatched")
    assert dispatched == Target("dispatched", 60, s(60), actual, met, remaining)


def test_every_target_is_evaluated_in_deadline_order() -> None:
    milestones = {"dispatched": s(30), "departed": s(130), "contacted": None, "supported": None, "arrived": s(400)}
    targets = evaluate(RAPID, milestones, R, s(200))
    assert [(t.milestone, t.deadline, t.actual, t.met) for t in targets] == [
        ("dispatched", s(60), s(30), True),
        ("departed", s(120), s(130), False),
        ("contacted", s(180), None, False),  # deadline passed, never reached
        ("supported", s(300), None, None),  # still possible: countdown runs
        ("arrived", s(480), s(400), True),
    ]
    assert next(t for t in targets if t.milestone == "supported").remaining_ms == 100_000


def test_missing_person_targets_order_and_long_feedback_deadline() -> None:
    targets = evaluate(BUILTIN_POLICIES["missing_person"], {}, R, s(3600))
    assert [(t.milestone, t.met) for t in targets] == [
        ("supported", False), ("dispatched", False), ("arrived", False), ("cleared", None)]
    assert targets[-1].remaining_ms == (86400 - 3600) * 1000


def test_milestones_may_be_spec_objects() -> None:
    milestones: dict[str, Any] = {"dispatched": {"ts": s(64), "source": "api", "unit_id": "E1"}, "departed": None}
    targets = evaluate(BUILTIN_POLICIES["nfpa_1710"], milestones, R, s(100))
    assert [(t.milestone, t.actual, t.met) for t in targets] == [
        ("dispatched", s(64), True), ("departed", None, None), ("arrived", None, None)]
    assert targets[0].to_dict() == {"milestone": "dispatched", "seconds": 64, "deadline": s(64), "actual": s(64),
                                    "met": True, "remaining_ms": 0}


# --- loading and validation -------------------------------------------------------------------------------


def test_load_policies_merges_user_policies_over_the_builtins() -> None:
    policies = load_policies({"traffic": {"dispatched": 120, "arrived": 900}, "nfpa_1710": {"arrived": 300}})
    assert set(policies) == {"rapid_12358", "missing_person", "nfpa_1710", "traffic"}
    assert policies["traffic"] == Policy("traffic", {"dispatched": 120, "arrived": 900})
    assert policies["nfpa_1710"].targets == {"arrived": 300}  # replaced, not merged target by target
    assert BUILTIN_POLICIES["nfpa_1710"].targets["arrived"] == 384  # the built-ins are untouched
    assert load_policies({}) == dict(BUILTIN_POLICIES)


BAD_POLICIES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown milestone", {"p": {"arived": 60}}, "policy 'p': unknown milestone 'arived'"),
    ("received is the reference", {"p": {"received": 60}}, "unknown milestone 'received'"),
    ("zero seconds", {"p": {"arrived": 0}}, "target 'arrived' must be a positive whole number"),
    ("negative seconds", {"p": {"arrived": -5}}, "must be a positive whole number"),
    ("fractional seconds", {"p": {"arrived": 1.5}}, "must be a positive whole number"),
    ("seconds as text", {"p": {"arrived": "60"}}, "must be a positive whole number"),
    ("seconds as bool", {"p": {"arrived": True}}, "must be a positive whole number"),
    ("no targets", {"p": {}}, "policy 'p' has no targets"),
    ("not a mapping", {"p": [60]}, "policy 'p' must map milestone names to seconds"),
    ("empty name", {"": {"arrived": 60}}, "non-empty name"),
]


@pytest.mark.parametrize(("config", "reason"), [c[1:] for c in BAD_POLICIES], ids=[c[0] for c in BAD_POLICIES])
def test_bad_policy_configuration_is_refused(config: dict[str, Any], reason: str) -> None:
    with pytest.raises(PolicyError, match=reason) as err:
        load_policies(config)
    assert isinstance(err.value, DomainError) and isinstance(err.value, ValueError)
    assert err.value.reason == str(err.value)


def test_resolve_policy() -> None:
    assert resolve_policy("nfpa_1710") is BUILTIN_POLICIES["nfpa_1710"]
    with pytest.raises(PolicyError, match="unknown policy 'fast' \\(known: missing_person, nfpa_1710, rapid_12358\\)"):
        resolve_policy("fast")


# --- selection rules -----------------------------------------------------------------------------------------

DEFAULT_SELECTION: list[tuple[str, int, str | None, str | None]] = [
    ("violent_crime", 2, None, "rapid_12358"),
    ("robbery", 3, None, "rapid_12358"),
    ("Assault_with_weapon", 4, None, "rapid_12358"),  # glob, case-insensitive
    ("sos", 2, None, "rapid_12358"),
    ("theft", 1, None, "rapid_12358"),  # priority 1
    ("theft", 2, None, None),  # no rule: no SLA
    ("missing_person", 2, None, "missing_person"),
    ("missing_child", 1, None, "missing_person"),  # the category beats priority 1
    ("fire", 1, None, "nfpa_1710"),
    ("fire_residential", 3, None, "nfpa_1710"),
    ("medical", 2, None, "nfpa_1710"),
    ("ems", 4, None, "nfpa_1710"),
    ("fireworks", 3, None, None),  # "fire_*" does not match "fireworks"
    ("theft", 2, "nfpa_1710", "nfpa_1710"),  # explicit wins
    ("robbery", 1, "missing_person", "missing_person"),
]


@pytest.mark.parametrize(("category", "priority", "explicit", "policy"), DEFAULT_SELECTION)
def test_default_rules(category: str, priority: int, explicit: str | None, policy: str | None) -> None:
    assert DEFAULT_RULES.select(category, priority, explicit) == policy


def test_load_rules_first_match_wins_and_default() -> None:
    policies = load_policies({"traffic": {"arrived": 900}})
    rules = load_rules({
        "rules": [
            {"policy": "rapid_12358", "priority": [1, 2], "categories": ["traffic*"]},
            {"policy": "traffic", "categories": ["traffic*"]},
            {"policy": "nfpa_1710", "priority": 1},
        ],
        "default": "missing_person",
    }, policies)
    assert rules == PolicyRules((PolicyRule("rapid_12358", ("traffic*",), 1, 2), PolicyRule("traffic", ("traffic*",)),
                                 PolicyRule("nfpa_1710", (), 1, 1)), "missing_person")
    assert rules.select("traffic_accident", 2) == "rapid_12358"
    assert rules.select("traffic_accident", 3) == "traffic"
    assert rules.select("theft", 1) == "nfpa_1710"
    assert rules.select("theft", 4) == "missing_person"
    assert load_rules({}, policies) == PolicyRules()


BAD_RULES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown policy", {"rules": [{"policy": "fast"}]}, "unknown policy 'fast'"),
    ("unknown default", {"default": "fast"}, "unknown policy 'fast'"),
    ("default not a name", {"default": 3}, "'default' must be a policy name"),
    ("rules not a list", {"rules": "rapid_12358"}, "'rules' must be a list"),
    ("rule not an object", {"rules": ["rapid_12358"]}, "policy rule 0: must be an object"),
    ("rule without policy", {"rules": [{"categories": ["x"]}]}, "policy rule 0: 'policy' must be a policy name"),
    ("unknown key", {"rules": [{"policy": "nfpa_1710", "category": "fire"}]}, "unknown keys \\['category'\\]"),
    ("categories a string", {"rules": [{"policy": "nfpa_1710", "categories": "fire"}]}, "'categories' must be a list"),
    ("empty pattern", {"rules": [{"policy": "nfpa_1710", "categories": [""]}]}, "'categories' must be a list"),
    ("priority 0", {"rules": [{"policy": "nfpa_1710", "priority": 0}]}, "'priority' must be 1..4"),
    ("priority 5", {"rules": [{"policy": "nfpa_1710", "priority": [1, 5]}]}, "'priority' must be 1..4"),
    ("reversed range", {"rules": [{"policy": "nfpa_1710", "priority": [3, 1]}]}, "'priority' must be 1..4"),
    ("range of three", {"rules": [{"policy": "nfpa_1710", "priority": [1, 2, 3]}]}, "'priority' must be 1..4"),
    ("priority as text", {"rules": [{"policy": "nfpa_1710", "priority": "1"}]}, "'priority' must be 1..4"),
    ("second rule bad", {"rules": [{"policy": "nfpa_1710"}, {"policy": "x"}]}, "unknown policy 'x'"),
]


@pytest.mark.parametrize(("config", "reason"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES])
def test_bad_rules_are_refused(config: dict[str, Any], reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        load_rules(config, BUILTIN_POLICIES)
