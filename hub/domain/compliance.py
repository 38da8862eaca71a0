"""Response-time reports: per milestone count, mean, p50, p90 and compliance with the incident's own policy.

Rules of the figures (GET /api/v1/reports/response-times):
- A time is seconds from `received` to the milestone. An incident without the milestone adds
  nothing to count/mean/percentiles (it is never treated as zero or as "met").
- Percentiles use the nearest-rank method: the p-th percentile of n sorted times is the time at
  1-based rank ceil(p/100 * n). It is always an observed time, never interpolated.
- Compliance of a milestone = met / decided, over the incidents whose policy has a target for it.
  Decided means met or missed (see `sla.evaluate`): an open incident whose deadline has not passed
  yet is `pending` and excluded; on a closed incident a missing milestone is missed.
- Diverted incidents (handed to the 12345 hotline) are counted apart and never enter the police
  response figures.
- group_by `unit`: an incident counts in the group of every unit assigned to it (also a cancelled
  one), with the incident's (first-unit) milestones, so unit groups do not add up to `overall`;
  an incident without units is in group "unassigned". group_by `policy`: no policy is "none".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.domain.errors import DomainError
from hub.domain.sla import BUILTIN_POLICIES, MILESTONES, Policy, evaluate

__all__ = ["GROUP_BY", "GroupStats", "MilestoneStats", "ReportError", "ResponseRecord", "ResponseReport",
           "nearest_rank", "response_times"]

GROUP_BY = ("category", "unit", "policy")
REPORTED = MILESTONES[1:]  # `received` is the zero of every time


class ReportError(DomainError, ValueError):
    """A report was asked for with bad parameters."""


@dataclass(frozen=True)
class ResponseRecord:
    """The light form of an incident a report needs; `milestones` maps names to epoch ms or None."""

    incident_id: str
    category: str
    policy: str | None
    received: int
    milestones: Mapping[str, int | None]
    unit_ids: tuple[str, ...] = ()
    diverted: bool = False
    handed_over: bool = False
    closed: bool = False

    @classmethod
    def from_view(cls, view: Mapping[str, Any]) -> ResponseRecord:
        """From the dict of `Incident.view` (GET /api/v1/incidents/{id})."""
        milestones = {name: (m["ts"] if m else None) for name, m in view["milestones"].items()}
        diversion = view.get("diversion")
        return cls(
            incident_id=view["id"],
            category=view["category"],
            policy=view.get("policy"),
            received=view["received_at"],
            milestones=milestones,
            unit_ids=tuple(dict.fromkeys(a["unit_id"] for a in view.get("assignments", []))),
            diverted=diversion is not None,
            handed_over=bool(diversion and diversion.get("handed_over_at") is not None),
            closed=view.get("status") == "closed",
        )


@dataclass(frozen=True)
class MilestoneStats:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    decided: int  # incidents with a target for this milestone whose outcome is known
    met: int
    pending: int  # open and before the deadline: left out of the compliance
    compliance: float | None  # met / decided, None when nothing is decided

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "p50": self.p50, "p90": self.p90, "decided": self.decided,
                "met": self.met, "pending": self.pending, "compliance": self.compliance}


@dataclass(frozen=True)
class GroupStats:
    incidents: int
    milestones: dict[str, MilestoneStats]

    def to_dict(self) -> dict[str, Any]:
        return {"incidents": self.incidents, "milestones": {k: v.to_dict() for k, v in self.milestones.items()}}


@dataclass(frozen=True)
class DiversionStats:
    count: int = 0
    handed_over: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "handed_over": self.handed_over}


@dataclass(frozen=True)
class ResponseReport:
    group_by: str
    groups: dict[str, GroupStats]
    overall: GroupStats
    diverted: dict[str, DiversionStats]
    diverted_total: DiversionStats

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "groups": {k: v.to_dict() for k, v in self.groups.items()},
            "overall": self.overall.to_dict(),
            "diverted": {"total": self.diverted_total.to_dict(), "groups": {k: v.to_dict() for k, v in
                                                                            self.diverted.items()}},
        }


def nearest_rank(sorted_values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of ascending `sorted_values` (not empty), 0 < percent <= 100."""
    if not sorted_values:
        raise ReportError("a percentile of no values")
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class _Accumulator:
    incidents: int = 0
    seconds: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in REPORTED})
    met: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPORTED, 0))
    missed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPORTED, 0))
    pending: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPORTED, 0))

    def add(self, record: ResponseRecord, outcomes: Mapping[str, bool | None]) -> None:
        self.incidents += 1
        for name in REPORTED:
            ts = record.milestones.get(name)
            if ts is not None:
                self.seconds[name].append((ts - record.received) / 1000)
            if name in outcomes:
                outcome = outcomes[name]
                counter = self.pending if outcome is None else self.met if outcome else self.missed
                counter[name] += 1

    def stats(self) -> GroupStats:
        milestones = {}
        for name in REPORTED:
            times = sorted(self.seconds[name])
            decided = self.met[name] + self.missed[name]
            milestones[name] = MilestoneStats(
                count=len(times),
                mean=round(sum(times) / len(times), 3) if times else None,
                p50=nearest_rank(times, 50) if times else None,
                p90=nearest_rank(times, 90) if times else None,
                decided=decided,
                met=self.met[name],
                pending=self.pending[name],
                compliance=self.met[name] / decided if decided else None,
            )
        return GroupStats(self.incidents, milestones)


def _group_keys(record: ResponseRecord, group_by: str) -> list[str]:
    if group_by == "category":
        return [record.category]
    if group_by == "policy":
        return [record.policy or "none"]
    return list(dict.fromkeys(record.unit_ids)) or ["unassigned"]


def response_times(
    incidents: Iterable[ResponseRecord | Mapping[str, Any]],
    *,
    now_ms: int,
    group_by: str = "category",
    policies: Mapping[str, Policy] = BUILTIN_POLICIES,
) -> ResponseReport:
    """The report over `incidents` (records or incident views), SLA outcomes judged at `now_ms`.

    The caller picks the incidents (e.g. received within the report's from/to). An incident whose
    policy is unknown to `policies` has no targets: it adds times but no compliance."""
    if group_by not in GROUP_BY:
        raise ReportError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    groups: dict[str, _Accumulator] = {}
    overall = _Accumulator()
    diverted: dict[str, DiversionStats] = {}
    diverted_total = DiversionStats()
    for item in incidents:
        record = item if isinstance(item, ResponseRecord) else ResponseRecord.from_view(item)
        keys = _group_keys(record, group_by)
        if record.diverted:
            handed = int(record.handed_over)
            diverted_total = DiversionStats(diverted_total.count + 1, diverted_total.handed_over + handed)
            for key in keys:
                before = diverted.get(key, DiversionStats())
                diverted[key] = DiversionStats(before.count + 1, before.handed_over + handed)
            continue
        policy = policies.get(record.policy) if record.policy else None
        outcomes = {} if policy is None else {
            t.milestone: t.met
            for t in evaluate(policy, record.milestones, record.received, now_ms, final=record.closed)
        }
        overall.add(record, outcomes)
        for key in keys:
            groups.setdefault(key, _Accumulator()).add(record, outcomes)
    return ResponseReport(
        group_by=group_by,
        groups={key: acc.stats() for key, acc in sorted(groups.items())},
        overall=overall.stats(),
        diverted=dict(sorted(diverted.items())),
        diverted_total=diverted_total,
    )
