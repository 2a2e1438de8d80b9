"""The API gateway both targets put in front of the model servers (Caddy): which API paths pass,
how the key reaches Caddy, and its configuration file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slm_deploy.spec import Runtime
from slm_deploy.templating import render

if TYPE_CHECKING:
    from slm_deploy.catalog import Catalog
    from slm_deploy.planner.types import Plan

API_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings")
METRICS_PORT = 9180
API_KEY_FILE = "/run/secrets/api_key"
MIN_KEY_LENGTH = 32

# The key reaches Caddy as an adapt-time placeholder, read from the secret file inside the
# container; neither the compose file, the manifests nor the environment ever hold it.
ENTRYPOINT = (
    f'key="$(cat {API_KEY_FILE})"; '
    f'if [ "${{#key}}" -lt {MIN_KEY_LENGTH} ]; then '
    f'echo "gateway: the api_key secret must hold at least {MIN_KEY_LENGTH} characters" >&2; exit 1; fi; '
    'SLM_API_KEY="$key" exec caddy run --config /etc/caddy/Caddyfile --adapter caddyfile'
)


# The central fleet view (docs/rollout.md, "Fleet view") reads a box's release state through the
# gateway, the box's one published port: only the box agent's series (rollout/boxagent/metrics.py
# record_state), from the box Prometheus's federation endpoint, with the API key. The query is fixed
# by the gateway, so a client cannot ask the box's Prometheus for anything else.
RELEASE_METRICS_PATH = "/slm/release-metrics"
RELEASE_METRICS_MATCH = '{__name__=~"slm_release_.+|slm_rollbacks_total"}'


# How much of a request's body Caddy reads before it proxies it (reverse_proxy `request_buffers`;
# the Caddyfile says why). A smaller body is read whole and the client's closed before the proxy
# starts (reverseproxy.go:1261 at v2.10.2). A larger one is proxied from the buffer, then from the
# client's body, whose last read also returns its end (net/http transfer.go:876-879 at go1.25.0), so
# the proxy never reads it again once closed: safe too. A body of exactly this size is the one
# exposed: Caddy reads it to the limit without seeing its end (reverseproxy.go:1251), and the proxy's
# last read can meet the closed body (20 of 1,000 streams lost at the limit, none 1 byte under it or
# at twice it; the outside review, 2026-12-07). Small, because the Open WebUI and Grafana routes
# buffer for clients without a login too, and by default Caddy sets no time limit on reading a body
# (`timeouts { read_body }` would, but its deadline stays on a connection after a WebSocket upgrade,
# and Open WebUI's socket.io and Grafana Live run on those).
REQUEST_BUFFERS = "64KiB"


def route(server: str, address: str, prefix: str = "", keepalive: bool = True) -> dict[str, str]:
    """One upstream; `prefix` (e.g. /phi4mini) when several models share the gateway; `keepalive`
    False: a new upstream connection per request, for a server that closes its connections after a
    reply without saying so."""
    variable = "SLM_UPSTREAM" + (f"_{server.upper().replace('-', '_')}" if prefix else "")
    return {"prefix": prefix, "upstream": address, "variable": variable, "keepalive": "on" if keepalive else "off"}


def upstream_keepalive(plan: Plan, catalog: Catalog) -> bool:
    """Whether the gateway may reuse connections to the plan's server (catalog data: the onnx
    server's own entry, else the profile of the image the server runs)."""
    if plan.runtime == Runtime.ONNX.value:
        from slm_deploy.onnx_builds import load_onnx_server

        return load_onnx_server().upstream_keepalive
    from slm_deploy.runtimes import runtime_image_id

    profile = catalog.profiles.get(runtime_image_id(plan))
    return profile is None or profile.upstream_keepalive


def caddyfile(
    label: str,
    *,
    tls: bool,
    port: int,
    routes: list[dict[str, str]],
    grafana_upstream: str | None = None,
    webui_upstream: str | None = None,
    prometheus_upstream: str | None = None,
    api_healthz: bool = True,
) -> str:
    """`api_healthz` False: no /healthz on the API server. Every request that server answers but 401, 403, 404
    counts as a user's in the scale-to-zero activation query, so a health check there would keep a
    GPU node awake; Kubernetes probes the metrics server instead (stacks/k8s/gateway.py)."""
    from urllib.parse import urlencode

    values: dict[str, Any] = {
        "prometheus_upstream": prometheus_upstream,
        "release_metrics_path": RELEASE_METRICS_PATH,
        "release_metrics_query": urlencode({"match[]": RELEASE_METRICS_MATCH}),
        "box_id": label,
        "tls": tls,
        "port": port,
        "api_paths": API_PATHS,
        "routes": routes,
        "grafana_upstream": grafana_upstream,
        "webui_upstream": webui_upstream,
        "api_healthz": api_healthz,
        "request_buffers": REQUEST_BUFFERS,
    }
    return render("Caddyfile", **values)
