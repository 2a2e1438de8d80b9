"""The PromQL of KEDA's Prometheus triggers, evaluated the way Prometheus would over the series a
stack really exports (slm_deploy.simulator.series): selectors with label matchers, `rate(...[w])`,
`sum(...)` and `+` between two sums. Any other shape is not evaluated (None from `parse`), and the
autoscaling check says so instead of guessing.

Semantics kept from Prometheus (prometheus/prometheus promql/engine.go, functions.go):
- a selector returns only series that exist now: no pod, no series;
- `rate` needs at least two samples inside its window (a window shorter than two scrape
  intervals returns nothing);
- `sum` of an empty vector is an empty vector, not 0;
- `a + b` between vectors matches identical label sets; an empty side gives an empty result.
KEDA reads an empty result as 0 (kedacore/keda pkg/scalers/prometheus_scaler.go: ignoreNullValues
defaults to true).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None  # PromQL regexes are fully anchored
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...]
    window: int | None = None  # seconds, for rate(...[w])

    def selects(self, name: str, labels: dict[str, str]) -> bool:
        return name == self.metric and all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class Query:
    terms: tuple[Selector, ...]  # sum(term) + sum(term) + ...


@dataclass(frozen=True)
class Sample:
    """One series at one step: `value` is a gauge's value, or a counter's increase per second."""

    metric: str
    labels: Labels
    value: float
    scrape_interval: int


_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_SELECTOR = re.compile(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(.*?)\})?\s*")
_RATE = re.compile(r"\s*rate\((.*)\[(\d+)([smh])\]\)\s*")
_SUM = re.compile(r"\s*sum\s*\((.*)\)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600}


def _split_plus(query: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(query):
        depth += {"(": 1, "{": 1, "[": 1, ")": -1, "}": -1, "]": -1}.get(char, 0)
        if char == "+" and depth == 0:
            parts.append(query[start:i])
            start = i + 1
    return [*parts, query[start:]]


def _selector(text: str, window: int | None) -> Selector | None:
    match = _SELECTOR.fullmatch(text)
    if not match:
        return None
    matchers = []
    body = match.group(2) or ""
    for part in filter(str.strip, body.split(",")):
        m = _MATCHER.fullmatch(part)
        if not m:
            return None
        matchers.append(Matcher(m.group(1), m.group(2), m.group(3).replace('\\"', '"')))
    return Selector(match.group(1), tuple(matchers), window)


def parse(query: str) -> Query | None:
    """`sum(x) [+ sum(y) ...]` with x an instant selector or `rate(selector[w])`; None otherwise."""
    terms = []
    for part in _split_plus(query):
        summed = _SUM.fullmatch(part)
        if not summed:
            return None
        inner = summed.group(1)
        rate = _RATE.fullmatch(inner)
        selector = _selector(rate.group(1), int(rate.group(2)) * _UNITS[rate.group(3)]) if rate else _selector(inner, None)
        if selector is None:
            return None
        terms.append(selector)
    return Query(tuple(terms))


def evaluate(query: Query, history: list[list[Sample]], now: int, step: int) -> float | None:
    """The query's value at `now` over `history` (one list of samples per step, the last is now);
    None for an empty result."""
    total = 0.0
    for term in query.terms:
        value = _term(term, history, now, step)
        if value is None:
            return None  # sum(empty) is empty, and `+` with an empty side is empty
        total += value
    return total


def _term(selector: Selector, history: list[list[Sample]], now: int, step: int) -> float | None:
    current = [s for s in history[-1] if selector.selects(s.metric, dict(s.labels))]
    if not current:
        return None
    if selector.window is None:
        return sum(s.value for s in current)
    # The samples Prometheus holds for each selected series inside the window: one per scrape
    # interval. Gathered in one pass over the window, not one per series.
    wanted: dict[tuple[str, Labels], list[float]] = {(s.metric, s.labels): [] for s in current}
    for at, samples in zip(range(now - step * (len(history) - 1), now + 1, step), history, strict=True):
        if at > now - selector.window:
            for other in samples:
                steps = wanted.get((other.metric, other.labels))
                if steps is not None:
                    steps.append(other.value)
    values = []
    for sample in current:
        steps = wanted[(sample.metric, sample.labels)]
        scrapes = min(len(steps) * step, selector.window) // sample.scrape_interval
        if scrapes >= 2:
            values.append(sum(steps) / len(steps))
    return sum(values) if values else None
