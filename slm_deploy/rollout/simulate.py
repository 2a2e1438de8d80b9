"""A fleet-scale rollout on paper: how waves, Ansible's forks, flaky boxes, a bad release and the
registry behave at 10,000 boxes (issue 25, item 4). Deterministic (seeded); no box is touched.

The model, and where each number comes from:
- A wave is one Ansible batch (`serial`); Ansible runs at most `forks` boxes at once (default 5,
  ansible.cfg `forks`), so a wave of W boxes takes about ceil(W / forks) box-times.
- A box-time is fetch + verify + `up --wait` + gate, drawn from a log-normal distribution around
  the given median (image pulls dominate; a release that changes no image is seconds).
- A good release still fails on a share of boxes for reasons of their own (disk full, a box that
  went offline mid-wave): `flaky`. A bad release fails on every box it reaches.
- A wave stops the rollout when its failed share exceeds max_fail_percentage (Ansible semantics:
  strictly greater than).
- Registry load: push mode fetches from the controller's copy; the pull variant polls a manifest per
  box per interval (spread by the timer's RandomizedDelaySec) and downloads the bundle only when its
  tag moved.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    boxes: int = 10000
    rings: tuple[str, ...] = ("1", "10%", "rest")  # a count, a share of the fleet, or the rest (as in fleet.yaml)
    forks: int = 50
    median_box_seconds: float = 120.0
    flaky: float = 0.005
    max_fail_percentage: float = 0.0
    bad_release: bool = False
    bad_share: float = 1.0  # of the boxes, those a bad release breaks (a defect of one hardware kind)
    bundle_bytes: int = 25_000
    poll_minutes: int = 15
    seed: int = 7


@dataclass(frozen=True)
class Wave:
    size: int
    failed: int
    seconds: float
    stopped: bool


@dataclass(frozen=True)
class Outcome:
    waves: tuple[Wave, ...]
    boxes_reached: int
    boxes_failed: int
    hours: float
    stopped_at_wave: int | None  # 1-based
    pull_manifest_requests_per_second: float
    push_bytes: int


def ring_sizes(scenario: Scenario) -> list[int]:
    left = scenario.boxes
    sizes = []
    for ring in scenario.rings:
        if ring == "rest":
            size = left
        elif ring.endswith("%"):
            size = min(left, max(1, math.ceil(scenario.boxes * float(ring[:-1]) / 100 - 1e-9)))
        else:
            size = min(left, int(ring))
        if size:
            sizes.append(size)
        left -= size
    return sizes


def run(scenario: Scenario) -> Outcome:
    rng = random.Random(scenario.seed)
    sigma = 0.5
    waves = []
    reached = failed_total = 0
    seconds_total = 0.0
    stopped_at = None
    for number, size in enumerate(ring_sizes(scenario), start=1):
        times = sorted(rng.lognormvariate(math.log(scenario.median_box_seconds), sigma) for _ in range(size))
        # `forks` slots; each takes the next box when free (Ansible's linear strategy per task is
        # stricter; this is the optimistic bound).
        slots = [0.0] * min(scenario.forks, size)
        for t in times:
            i = slots.index(min(slots))
            slots[i] += t
        wave_seconds = max(slots)
        broken = scenario.bad_share if scenario.bad_release else scenario.flaky
        failed = sum(rng.random() < broken for _ in range(size)) if broken < 1 else size
        stopped = failed * 100 > scenario.max_fail_percentage * size
        waves.append(Wave(size, failed, wave_seconds, stopped))
        reached += size
        failed_total += failed
        seconds_total += wave_seconds
        if stopped:
            stopped_at = number
            break
    return Outcome(
        tuple(waves),
        reached,
        failed_total,
        seconds_total / 3600,
        stopped_at,
        scenario.boxes / (scenario.poll_minutes * 60),
        reached * scenario.bundle_bytes,
    )


def false_stop_probability(size: int, flaky: float, max_fail_percentage: float) -> float:
    """P(a good release's wave of SIZE boxes fails more than the threshold), binomial tail."""
    limit = math.floor(max_fail_percentage * size / 100)
    # P(X <= limit) by summing the binomial terms in log space.
    total = 0.0
    for k in range(0, min(limit, size) + 1):
        log_term = math.lgamma(size + 1) - math.lgamma(k + 1) - math.lgamma(size - k + 1)
        if flaky > 0:
            log_term += k * math.log(flaky)
        elif k:
            continue
        log_term += (size - k) * math.log1p(-flaky) if flaky < 1 else (0 if size == k else -math.inf)
        total += math.exp(log_term)
    return max(0.0, 1.0 - total)
