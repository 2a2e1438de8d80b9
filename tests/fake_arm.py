"""A fake Azure Resource Manager on 127.0.0.1 for `slm-deploy preflight`: HTTPS with a CA made for
the run (azure-core refuses bearer tokens over plain HTTP), answering the four read calls preflight
makes with the response shapes the REST API documents:

- GET /subscriptions/{s}/providers/Microsoft.Compute/skus?$filter=location eq '{l}'
  (azure-rest-api-specs Microsoft.Compute/Skus/stable/2021-07-01/examples/skus/
  ListAvailableResourceSkusForARegion.json: value[] of {resourceType, name, family, locations,
  capabilities[{name, value}], restrictions[{type, values, reasonCode}]});
- GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/usages
  (https://learn.microsoft.com/rest/api/compute/usage/list: value[] of {unit, currentValue, limit,
  name{value, localizedValue}});
- GET /subscriptions/{s}/providers/Microsoft.ContainerService/locations/{l}/kubernetesVersions
  (Microsoft.ContainerService/aks/stable/2025-09-01/examples/KubernetesVersions_List.json:
  values[] of {version, isPreview, capabilities{supportPlan}, patchVersions{patch: {upgrades}}});
- GET /subscriptions/{s}/providers/Microsoft.Authorization/roleAssignments?$filter=assignedTo('{oid}')
  (https://learn.microsoft.com/rest/api/authorization/role-assignments/list-for-subscription:
  value[] of {id, name, type, properties{roleDefinitionId, principalId, principalType, scope}});
- GET /subscriptions/{s}/providers/Microsoft.ContainerService/managedClusters
  (Microsoft.ContainerService/aks/stable/2025-09-01/examples/ManagedClustersList.json: value[] of
  {id, location, name, type, tags, properties{kubernetesVersion, currentKubernetesVersion, dnsPrefix,
  fqdn, powerState{code}, agentPoolProfiles[]}});
- GET .../managedClusters/{name}/agentPools (AgentPoolsList.json: value[] of {id, name, type,
  properties{count, vmSize, mode, scaleSetPriority, powerState{code}, orchestratorVersion}}).

Every request is recorded, so a test can show preflight only reads.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SUBSCRIPTION = "3f2b6c1e-9a4d-4e8b-8c7f-2d1e0a9b8c7d"
OID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def sku(name: str, family: str, vcpus: int, location: str, restricted: str | None = None, spot: bool = True) -> dict[str, Any]:
    return {
        "resourceType": "virtualMachines",
        "name": name,
        "tier": "Standard",
        "size": name.removeprefix("Standard_"),
        "family": family,
        "locations": [location],
        "locationInfo": [{"location": location, "zones": ["1", "2", "3"]}],
        "capabilities": [
            {"name": "vCPUs", "value": str(vcpus)},
            {"name": "LowPriorityCapable", "value": "True" if spot else "False"},
        ],
        "restrictions": (
            [
                {
                    "type": "Location",
                    "values": [location],
                    "restrictionInfo": {"locations": [location]},
                    "reasonCode": restricted,
                }
            ]
            if restricted
            else []
        ),
    }


def usage(name: str, current: int, limit: int) -> dict[str, Any]:
    return {"unit": "Count", "currentValue": current, "limit": limit, "name": {"value": name, "localizedValue": name}}


def role(role_id: str) -> dict[str, Any]:
    scope = f"/subscriptions/{SUBSCRIPTION}"
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{role_id[:8]}-0000-0000-0000-000000000000",
        "name": f"{role_id[:8]}-0000-0000-0000-000000000000",
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{role_id}",
            "principalId": OID,
            "principalType": "User",
            "scope": scope,
        },
    }


def cluster(name: str, group: str, location: str, dns_prefix: str, version: str) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.ContainerService/managedClusters/{name}",
        "location": location,
        "name": name,
        "type": "Microsoft.ContainerService/ManagedClusters",
        "tags": {},
        "properties": {
            "provisioningState": "Succeeded",
            "kubernetesVersion": version,
            "currentKubernetesVersion": version,
            "dnsPrefix": dns_prefix,
            "fqdn": f"{dns_prefix}-4f2a9c1e.hcp.{location}.azmk8s.io",
            "powerState": {"code": "Running"},
            "agentPoolProfiles": [],
        },
    }


def agent_pool(
    owner: dict[str, Any], name: str, vm_size: str, count: int, spot: bool = False, running: bool = True
) -> dict[str, Any]:
    return {
        "id": f"{owner['id']}/agentPools/{name}",
        "name": name,
        "type": "Microsoft.ContainerService/managedClusters/agentPools",
        "properties": {
            "count": count,
            "vmSize": vm_size,
            "osType": "Linux",
            "mode": "System" if name == "system" else "User",
            "scaleSetPriority": "Spot" if spot else "Regular",
            "enableAutoScaling": name != "system",
            "provisioningState": "Succeeded",
            "orchestratorVersion": owner["properties"]["kubernetesVersion"],
            "powerState": {"code": "Running" if running else "Stopped"},
        },
    }


@dataclass
class Arm:
    skus: list[dict[str, Any]] = field(default_factory=list)
    usages: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    pools: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # cluster name -> its agent pools
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""
    ca: str = ""

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        self.requests.append((method, path))
        if method != "GET":
            return 405, {"error": {"code": "MethodNotAllowed", "message": "preflight must only read"}}
        base = rf"^/subscriptions/{SUBSCRIPTION}/providers/"
        if re.match(base + r"Microsoft\.Compute/skus$", path):
            return 200, {"value": self.skus, "nextLink": None}
        if re.match(base + r"Microsoft\.Compute/locations/[^/]+/usages$", path):
            return 200, {"value": self.usages}
        if re.match(base + r"Microsoft\.ContainerService/locations/[^/]+/kubernetesVersions$", path):
            return 200, {"values": self.versions}
        if re.match(base + r"Microsoft\.Authorization/roleAssignments$", path):
            wanted = query.get("$filter", [""])[0]
            return 200, {"value": [r for r in self.roles if r["properties"]["principalId"] in wanted]}
        if re.match(base + r"Microsoft\.ContainerService/managedClusters$", path):
            return 200, {"value": self.clusters}
        group = rf"^/subscriptions/{SUBSCRIPTION}/resourceGroups/[^/]+/providers/Microsoft\.ContainerService/managedClusters/"
        for found in self.clusters:
            if path.lower() == (found["id"] + "/agentPools").lower():
                return 200, {"value": self.pools.get(found["name"], [])}
        if re.match(group, path):
            return 404, {"error": {"code": "ResourceNotFound", "message": f"The Resource '{path}' was not found."}}
        if path.startswith("/subscriptions/"):
            return 404, {"error": {"code": "SubscriptionNotFound", "message": "The subscription could not be found."}}
        return 404, {"error": {"code": "NotFound", "message": path}}


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = folder / "srv.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=slm test CA",
        "-days", "1", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


@contextmanager
def serve(arm: Arm, folder: Path) -> Iterator[Arm]:
    ca, cert, key = _certificates(folder)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply()

        def do_PUT(self) -> None:
            self._reply()

        def do_POST(self) -> None:
            self._reply()

        def do_DELETE(self) -> None:
            self._reply()

        def _reply(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            status, body = arm.answer(self.command, parsed.path, urllib.parse.parse_qs(parsed.query))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    arm.url = f"https://127.0.0.1:{server.server_address[1]}"
    arm.ca = str(ca)
    try:
        yield arm
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class FakeCredential:
    """A token credential whose token carries an `oid` claim (unsigned: the fake ARM reads none)."""

    def __init__(self, oid: str = OID) -> None:
        claims = base64.urlsafe_b64encode(json.dumps({"oid": oid}).encode()).decode().rstrip("=")
        self.token = f"e30.{claims}.sig"

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)
