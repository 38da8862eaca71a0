"""Response-time (SLA) policies: targets in seconds from `received`, their selection and evaluation.

A policy names a target for some milestones (SPEC section 4). Policies come from configuration,
merged over the built-in ones; rules pick a policy from an incident's category and priority.
`evaluate` turns a policy and an incident's milestones into per-target deadlines, actual times,
`met` and a countdown for live chips. Pure: the current time is passed in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.domain.errors import DomainError

__all__ = [
    "BUILTIN_POLICIES",
    "DEFAULT_RULES",
    "MILESTONES",
    "TARGET_MILESTONES",
    "Policy",
    "PolicyError",
    "PolicyRule",
    "PolicyRules",
    "Target",
    "evaluate",
    "load_policies",
    "load_rules",
    "resolve_policy",
]

MILESTONES = ("received", "dispatched", "acknowledged", "departed", "contacted", "supported", "arrived", "cleared")
# `received` is the reference point of every target, so it cannot be a target itself.
TARGET_MILESTONES = MILESTONES[1:]


class PolicyError(DomainError, ValueError):
    """A policy or rule in the configuration is invalid, or a policy name is unknown."""


@dataclass(frozen=True)
class Policy:
    """A named set of targets: milestone -> whole seconds after `received`."""

    name: str
    targets: Mapping[str, int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PolicyError("a policy needs a non-empty name")
        if not self.targets:
            raise PolicyError(f"policy {self.name!r} has no targets")
        for milestone, seconds in self.targets.items():
            if milestone not in TARGET_MILESTONES:
                raise PolicyError(
                    f"policy {self.name!r}: unknown milestone {milestone!r} (known: {', '.join(TARGET_MILESTONES)})"
                )
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
                raise PolicyError(f"policy {self.name!r}: target {milestone!r} must be a positive whole number of "
                                  f"seconds, got {seconds!r}")
        object.__setattr__(self, "targets", dict(self.targets))  # decouple from the caller's mapping


BUILTIN_POLICIES: Mapping[str, Policy] = {
    p.name: p
    for p in (
        # Major and sensitive incidents.
        Policy("rapid_12358", {"dispatched": 60, "departed": 120, "contacted": 180, "supported": 300, "arrived": 480}),
        # supported = inquiry, cleared = feedback to the family.
        Policy("missing_person", {"supported": 60, "dispatched": 180, "arrived": 600, "cleared": 86400}),
        # NFPA 1710 fire/EMS reference: alarm handling 64 s, turnout 80 s, travel 240 s.
        Policy("nfpa_1710", {"dispatched": 64, "departed": 64 + 80, "arrived": 64 + 80 + 240}),
    )
}


def load_policies(config: Mapping[str, Any]) -> dict[str, Policy]:
    """Built-in policies overlaid with `config` = {name: {milestone: seconds}}; a user policy replaces a built-in."""
    policies = dict(BUILTIN_POLICIES)
    for name, targets in config.items():
        if not isinstance(targets, Mapping):
            raise PolicyError(f"policy {name!r} must map milestone names to seconds")
        policies[name] = Policy(name, targets)
    return policies


def resolve_policy(name: str, policies: Mapping[str, Policy] = BUILTIN_POLICIES) -> Policy:
    try:
        return policies[name]
    except KeyError:
        raise PolicyError(f"unknown policy {name!r} (known: {', '.join(sorted(policies))})") from None


@dataclass(frozen=True)
class PolicyRule:
    """Matches when the category matches one of the glob `categories` (case-insensitive; empty = any)
    and the priority lies in [priority_min, priority_max]."""

    policy: str
    categories: tuple[str, ...] = ()
    priority_min: int = 1
    priority_max: int = 4

    def matches(self, category: str, priority: int) -> bool:
        if not self.priority_min <= priority <= self.priority_max:
            return False
        cat = category.lower()
        return not self.categories or any(fnmatch.fnmatchcase(cat, p.lower()) for p in self.categories)


@dataclass(frozen=True)
class PolicyRules:
    """Ordered rules, first match wins; `default` (possibly None: no SLA) when none matches."""

    rules: tuple[PolicyRule, ...] = ()
    default: str | None = None

    def select(self, category: str, priority: int, explicit: str | None = None) -> str | None:
        """The policy name for a new incident; an explicit policy on the incident wins."""
        if explicit:
            return explicit
        for rule in self.rules:
            if rule.matches(category, priority):
                return rule.policy
        return self.default


# Category rules come before the priority rule: a priority-1 fire is still measured against the
# fire/EMS reference, a priority-1 missing child against the missing-person targets.
DEFAULT_RULES = PolicyRules(
    rules=(
        PolicyRule("missing_person", ("missing_person", "missing_*")),
        PolicyRule("nfpa_1710", ("fire", "fire_*", "medical", "medical_*", "ems", "ems_*")),
        PolicyRule("rapid_12358", ("violent_crime", "robbery", "assault*", "homicide", "kidnap*", "hostage*",
                                   "shooting", "stabbing", "riot", "terror*", "sos")),
        PolicyRule("rapid_12358", priority_max=1),
    ),
    default=None,
)


def load_rules(config: Mapping[str, Any], policies: Mapping[str, Policy]) -> PolicyRules:
    """Rules from `{"rules": [{"policy", "categories"?: [glob], "priority"?: n | [lo, hi]}], "default"?: name}`.

    Every named policy must exist in `policies`."""
    raw_rules = config.get("rules", [])
    if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
        raise PolicyError("policy rules: 'rules' must be a list")
    rules = tuple(_rule(i, raw, policies) for i, raw in enumerate(raw_rules))
    default = config.get("default")
    if default is not None:
        if not isinstance(default, str):
            raise PolicyError("policy rules: 'default' must be a policy name")
        resolve_policy(default, policies)
    return PolicyRules(rules, default)


def _rule(index: int, raw: object, policies: Mapping[str, Policy]) -> PolicyRule:
    where = f"policy rule {index}"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: must be an object")
    unknown = set(raw) - {"policy", "categories", "priority"}
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("policy")
    if not isinstance(name, str):
        raise PolicyError(f"{where}: 'policy' must be a policy name")
    resolve_policy(name, policies)
    categories = raw.get("categories", [])
    if isinstance(categories, str) or not isinstance(categories, Sequence) or not all(
        isinstance(c, str) and c for c in categories
    ):
        raise PolicyError(f"{where}: 'categories' must be a list of non-empty patterns")
    lo, hi = _priority_range(where, raw.get("priority"))
    return PolicyRule(name, tuple(categories), lo, hi)


def _priority_range(where: str, raw: object) -> tuple[int, int]:
    if raw is None:
        return 1, 4
    bounds = [raw, raw] if isinstance(raw, int) else raw
    if (
        not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 4 for b in bounds)
        or bounds[0] > bounds[1]
    ):
        raise PolicyError(f"{where}: 'priority' must be 1..4 or a range [lo, hi] within 1..4, got {raw!r}")
    return bounds[0], bounds[1]


@dataclass(frozen=True)
class Target:
    """One evaluated target. `met` is None while it can still be met; `remaining_ms` counts down to the
    deadline (negative when overdue) and freezes at the slack once the milestone is reached."""

    milestone: str
    seconds: int
    deadline: int
    actual: int | None
    met: bool | None
    remaining_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "milestone": self.milestone,
            "seconds": self.seconds,
            "deadline": self.deadline,
            "actual": self.actual,
            "met": self.met,
            "remaining_ms": self.remaining_ms,
        }


def evaluate(
    policy: Policy,
    milestones: Mapping[str, int | Mapping[str, Any] | None],
    received_ms: int,
    now_ms: int,
    *,
    final: bool = False,
) -> list[Target]:
    """Evaluate every target of `policy`, ordered by deadline.

    `milestones` maps names to epoch ms, to SPEC milestone objects `{"ts", ...}`, or to None.
    Reached: met = actual <= deadline (exactly at the deadline counts as met). Not reached: met is
    None until `now_ms` passes the deadline, then False; with `final` (the incident is closed and
    nothing more can arrive) an unreached target is False at once.
    """
    order = sorted(policy.targets.items(), key=lambda kv: (kv[1], MILESTONES.index(kv[0])))
    targets = []
    for milestone, seconds in order:
        deadline = received_ms + seconds * 1000
        actual = _ts(milestones.get(milestone))
        met: bool | None
        if actual is not None:
            met, remaining = actual <= deadline, deadline - actual
        else:
            met = False if final or now_ms > deadline else None
            remaining = deadline - now_ms
        targets.append(Target(milestone, seconds, deadline, actual, met, remaining))
    return targets


def _ts(value: int | Mapping[str, Any] | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    ts = value.get("ts")
    return ts if isinstance(ts, int) else None
