"""The fleet inventory: one file describing every edge box, validated with the spec models.

`defaults` holds any Serving or BoxOptions field; each box overrides them with `serving:` (one
model) or `models:` (several, all on the same runtime), plus any BoxOptions field. Every key is
checked: a typo is an error that names the file, the box and the field.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from slm_deploy.errors import InputError, format_location, from_validation_error
from slm_deploy.safeyaml import load, read_input
from slm_deploy.spec import Frozen, Hardware, Serving

BOX_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class SloThresholds(Frozen):
    """Alert thresholds; each can be overridden per fleet or box."""

    ttft_p95_seconds: float = Field(default=2.0, gt=0, description="Time to first token, p95, seconds.")
    error_ratio: float = Field(default=0.05, gt=0, lt=1, description="5xx share of gateway requests.")
    queue_waiting: int = Field(default=5, gt=0, description="Requests waiting in the vLLM queue.")
    kv_cache_usage: float = Field(default=0.9, gt=0, le=1, description="KV-cache usage fraction.")
    gpu_temperature_celsius: float = Field(default=85, gt=0)
    disk_free_ratio: float = Field(default=0.1, gt=0, lt=1, description="Free share of the model-cache disk.")


class AlertReceiver(Frozen):
    """Where Alertmanager sends the box's alerts: a webhook, and/or e-mail through a relay."""

    webhook: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", description="URL that receives Alertmanager's JSON.")
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", description="Address the alerts are mailed to.")
    smarthost: str | None = Field(default=None, pattern=r"^[^\s:]+:\d+$", description="Mail relay host:port (with email).")
    sender: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", description="From address (with email).")

    @model_validator(mode="after")
    def _complete(self) -> AlertReceiver:
        if self.webhook is None and self.email is None:
            raise ValueError("give webhook and/or email")
        if self.email is not None and (self.smarthost is None or self.sender is None):
            raise ValueError("email needs smarthost and sender")
        return self


class LogsOptions(Frozen):
    """Log collection beside the metrics (opt-in): Loki on the box, Alloy reading the containers' logs."""

    enabled: bool = Field(default=False, description="Loki and Alloy in the bundle; Grafana shows the logs.")
    disk_share: float = Field(
        default=0.05, gt=0, le=0.5, description="Share of hardware.disk_gib Loki may fill, beside the model cache."
    )
    max_retention_days: int = Field(default=31, ge=1, le=366, description="Upper bound of the retention sized from the disk.")
    gib_per_day: float = Field(
        default=0.25,
        gt=0,
        description="Log volume a day as Loki receives it (before compression, so the sizing errs long), GiB.",
    )


class BoxOptions(Frozen):
    """What runs next to the model server on a box."""

    webui: bool = Field(default=False, description="Open WebUI behind the gateway.")
    monitoring: bool = Field(default=True, description="Prometheus, Grafana, node-exporter (and DCGM on GPUs).")
    offline: bool = Field(default=False, description="Air-gapped: bake the model into an image built beforehand.")
    gateway_port: int = Field(default=8443, ge=1, le=65535, description="The one port published to the LAN.")
    listen_address: str = Field(
        default="0.0.0.0", description="Interface the gateway port binds to; 0.0.0.0 means every interface."
    )
    slo: SloThresholds = Field(default_factory=SloThresholds)
    alerts: AlertReceiver | None = Field(default=None, description="Alertmanager's receiver (with monitoring).")
    logs: LogsOptions = Field(default_factory=LogsOptions, description="Log collection (Loki + Alloy), off by default.")

    @field_validator("listen_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        if "%" in value:  # Python accepts a zone (fe80::1%eth0); a compose port binding does not
            raise ValueError("an address with a zone index (%...) cannot be a published port's host_ip")
        ipaddress.ip_address(value)
        return value


SERVING_KEYS = frozenset(Serving.model_fields)
OPTION_KEYS = frozenset(BoxOptions.model_fields)
MERGED_OPTIONS = ("slo", "logs")  # a box's mapping refines the defaults' key by key


class _RawBox(Frozen):
    id: str = Field(pattern=BOX_ID_PATTERN, description="Directory and compose project name.")
    os: str = Field(default="linux", description="Every box is a Linux Docker host; say so, or leave it out.")
    hardware: Hardware
    serving: dict[str, Any] | None = None
    models: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    webui: bool | None = None
    monitoring: bool | None = None
    offline: bool | None = None
    gateway_port: int | None = None
    listen_address: str | None = None
    slo: dict[str, Any] | None = None
    alerts: dict[str, Any] | None = None
    logs: dict[str, Any] | None = None

    @field_validator("os")
    @classmethod
    def _linux_only(cls, value: str) -> str:
        if value != "linux":
            # Foundry Local installs natively there (docs/onnx-runtime.md); nothing here can validate
            # an install, service registration, gateway and secrets for those systems.
            raise ValueError(
                f"{value} boxes are not generated: a bundle is a Docker Compose project for a Linux host; "
                "a native install with service registration, gateway and secrets for Windows or macOS "
                "is not generated because nothing here could validate it"
            )
        return value


class Ring(Frozen):
    """One wave of a rollout: named boxes, a share of the boxes not yet placed, or the rest."""

    name: str = Field(pattern=BOX_ID_PATTERN)
    boxes: list[str] | None = Field(default=None, min_length=1, description="These boxes, by id.")
    count: int | None = Field(default=None, ge=1, description="This many boxes not yet in a ring, in fleet order.")
    percent: float | None = Field(default=None, gt=0, le=100, description="This share of the whole fleet (rounded up).")

    @model_validator(mode="after")
    def _one_way(self) -> Ring:
        if sum(x is not None for x in (self.boxes, self.count, self.percent)) > 1:
            raise ValueError("give one of `boxes`, `count` or `percent` (none means every box not yet placed)")
        return self


class RolloutOptions(Frozen):
    """How `slm-deploy rollout` stages a release (issue 25): waves in ring order; a wave in which
    more than max_fail_percentage of its boxes fail stops the rollout, and those boxes roll back."""

    rings: list[Ring] = Field(
        default_factory=lambda: [Ring(name="canary", count=1), Ring(name="early", percent=10), Ring(name="rest")],
        min_length=1,
        description="Waves, in order; the default is one canary box, then 10% of the fleet, then the rest.",
    )
    max_fail_percentage: float = Field(default=0, ge=0, lt=100, description="Failures a wave tolerates, in percent of it.")
    wait_seconds: int = Field(default=1800, ge=60, le=86400, description="How long `up --wait` may take on a box.")

    @model_validator(mode="after")
    def _names(self) -> RolloutOptions:
        names = [ring.name for ring in self.rings]
        if len(set(names)) < len(names):
            raise ValueError("two rings have the same name")
        return self


class _RawFleet(Frozen):
    fleet: str = Field(pattern=BOX_ID_PATTERN)
    defaults: dict[str, Any] = Field(default_factory=dict)
    boxes: list[_RawBox] = Field(min_length=1)
    rollout: RolloutOptions = Field(default_factory=RolloutOptions)


@dataclass(frozen=True)
class Box:
    id: str
    hardware: Hardware
    servings: tuple[Serving, ...]
    options: BoxOptions
    path: str  # `boxes[3]`, for error messages


@dataclass(frozen=True)
class Fleet:
    name: str
    boxes: tuple[Box, ...]
    source: str
    directory: Path | None = None  # where the fleet file is: its images.lock.yaml applies
    rollout: RolloutOptions = RolloutOptions()  # noqa: RUF009 (frozen: one shared default is safe)


def _serving(source: str, defaults: dict[str, Any], given: dict[str, Any], path: str) -> Serving:
    unknown = sorted(set(given) - SERVING_KEYS)
    if unknown:
        raise InputError(source, f"{path}.{unknown[0]}", "unknown field")
    merged = {k: v for k, v in defaults.items() if k in SERVING_KEYS} | given
    try:
        return Serving.model_validate(merged)
    except ValidationError as exc:
        loc = exc.errors(include_url=False)[0]["loc"]
        owner = path if (not loc or loc[0] in given) else "defaults"
        raise from_validation_error(source, exc, [owner]) from None


def _options(source: str, defaults: dict[str, Any], raw: _RawBox, path: str) -> BoxOptions:
    merged: dict[str, Any] = {k: v for k, v in defaults.items() if k in OPTION_KEYS}
    for key in MERGED_OPTIONS:
        if key in merged and not isinstance(merged[key], dict):
            raise InputError(source, f"defaults.{key}", f"expected a mapping of {key} settings")
    given = {k: getattr(raw, k) for k in OPTION_KEYS if getattr(raw, k) is not None}
    for key in MERGED_OPTIONS:
        if key in merged and key in given:
            given[key] = dict(merged[key]) | given[key]
    merged |= given
    try:
        options = BoxOptions.model_validate(merged)
    except ValidationError as exc:
        loc = exc.errors(include_url=False)[0]["loc"]
        owner = path if (loc and loc[0] in given) else "defaults"
        raise from_validation_error(source, exc, [owner]) from None
    if options.logs.enabled and not options.monitoring:
        owner = path if ("logs" in given or "monitoring" in given) else "defaults"
        raise InputError(
            source, f"{owner}.logs.enabled", "logs need monitoring: true (Grafana shows them, Alertmanager gets their alerts)"
        )
    return options


def parse_fleet(data: Any, source: str) -> Fleet:
    if not isinstance(data, dict):
        raise InputError(source, "", "expected a mapping with `fleet`, `defaults` and `boxes`")
    try:
        raw = _RawFleet.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(source, exc) from None
    unknown = sorted(set(raw.defaults) - SERVING_KEYS - OPTION_KEYS)
    if unknown:
        raise InputError(source, f"defaults.{unknown[0]}", "unknown field")
    seen: dict[str, int] = {}
    boxes = []
    for i, raw_box in enumerate(raw.boxes):
        path = format_location(["boxes", i])
        if raw_box.id in seen:
            raise InputError(source, f"{path}.id", f"duplicate box id {raw_box.id!r} (first at boxes[{seen[raw_box.id]}])")
        seen[raw_box.id] = i
        if raw_box.serving is not None and raw_box.models is not None:
            raise InputError(source, f"{path}.models", "give `serving` or `models`, not both")
        if raw_box.models is not None:
            servings = tuple(_serving(source, raw.defaults, m, f"{path}.models[{j}]") for j, m in enumerate(raw_box.models))
        else:
            servings = (_serving(source, raw.defaults, raw_box.serving or {}, f"{path}.serving"),)
        if len({s.runtime for s in servings}) > 1:
            raise InputError(source, f"{path}.models", "every model on one box must use the same runtime")
        if len({s.model for s in servings}) < len(servings):
            raise InputError(source, f"{path}.models", "a model is listed twice")
        options = _options(source, raw.defaults, raw_box, path)
        if options.logs.enabled and raw_box.hardware.disk_gib is None:
            raise InputError(source, f"{path}.hardware.disk_gib", "logs.enabled sizes Loki's retention from disk_gib: give it")
        boxes.append(Box(raw_box.id, raw_box.hardware, servings, options, path))
    for i, ring in enumerate(raw.rollout.rings):
        for j, box_id in enumerate(ring.boxes or []):
            if box_id not in seen:
                raise InputError(source, f"rollout.rings[{i}].boxes[{j}]", f"no box {box_id!r} in this fleet")
    return Fleet(raw.fleet, tuple(boxes), source, rollout=raw.rollout)


def waves(fleet: Fleet) -> list[tuple[str, tuple[Box, ...]]]:
    """The rollout's waves, ring by ring; rings that get no box are left out."""
    left = list(fleet.boxes)
    total = len(fleet.boxes)
    out = []
    for ring in fleet.rollout.rings:
        if ring.boxes is not None:
            taken = [b for b in left if b.id in ring.boxes]
        elif ring.count is not None:
            taken = left[: ring.count]
        elif ring.percent is not None:
            taken = left[: max(1, math.ceil(total * ring.percent / 100 - 1e-9))]
        else:
            taken = list(left)
        left = [b for b in left if b not in taken]
        if taken:
            out.append((ring.name, tuple(taken)))
    if left:
        raise InputError(
            fleet.source,
            "rollout.rings",
            f"boxes {', '.join(b.id for b in left[:3])} are in no ring: end with a ring without boxes, count or percent",
        )
    return out


def load_fleet(path: Path) -> Fleet:
    """Read through the bounded reader (regular file, size, UTF-8, no duplicate keys, no alias
    bombs, finite numbers): see slm_deploy.safeyaml."""
    source = path.name or str(path)
    fleet = parse_fleet(load(read_input(path, source), source), source)
    return Fleet(fleet.name, fleet.boxes, fleet.source, path.parent, fleet.rollout)
