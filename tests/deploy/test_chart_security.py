"""The chart's security: API keys from a Secret mounted only where requests are
authenticated, no distributed install without keys, and NetworkPolicies that let clients reach
only the two APIs, Prometheus only the metrics ports, and everything else nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flts.security import create_key, read_keys

from .conftest import EXAMPLES, Render, helm_template
from .test_chart import Objects, by_component, env_of, of_kind

FRONT = {"inference", "gateway"}
KEYS_PATH = "/etc/flts/api-keys/api-keys.json"


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def _flts_deployments(objects: Objects) -> list[dict[str, Any]]:
    return [
        o
        for o in of_kind(objects, "Deployment")
        if _component(o) not in {"kafka", "minio", "postgres", "mlflow"}
    ]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In/NotIn expressions)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        inside = value in expression["values"]
        if (expression["operator"] == "In") != inside:
            return False
    return True


def _policies_for(objects: Objects, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p for p in of_kind(objects, "NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)
    ]


def _ingress_ports(policies: list[dict[str, Any]]) -> dict[int, list[Any]]:
    """Allowed ingress port -> the peers allowed on it (``None``: any source)."""
    ports: dict[int, list[Any]] = {}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", [{"port": 0}]):
                ports.setdefault(port["port"], []).append(rule.get("from"))
    return ports


def test_api_keys_are_mounted_only_where_requests_are_authenticated(
    renders: dict[str, Objects],
) -> None:
    objects = renders["distributed"]
    for deployment in _flts_deployments(objects):
        pod = deployment["spec"]["template"]["spec"]
        env = env_of(pod["containers"][0])
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if _component(deployment) in FRONT:
            assert env["FLTS_SECURITY__KEYS_FILE"] == KEYS_PATH
            assert volumes["api-keys"]["secret"]["secretName"] == "flts-api-keys"
            mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
            assert mount["readOnly"] is True
        else:
            assert "FLTS_SECURITY__KEYS_FILE" not in env, deployment["metadata"]["name"]
            assert "api-keys" not in volumes, deployment["metadata"]["name"]


def test_distributed_without_api_keys_does_not_render(helm: Path) -> None:
    result = helm_template(
        helm, "-f", str(EXAMPLES["distributed"]), "--set", "security.apiKeys.existingSecret="
    )
    assert result.returncode != 0
    assert "security.apiKeys" in result.stderr


def test_an_inline_keys_file_becomes_a_secret(render: Render, tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys.json"
    key = create_key(keys_file, "ops", ["admin"])
    objects = render(
        "-f", str(EXAMPLES["distributed"]),
        "--set", "security.apiKeys.existingSecret=",
        "--set-file", f"security.apiKeys.keysFile={keys_file}",
    )  # fmt: skip
    secret = next(s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == "flts-api-keys")
    stored = secret["stringData"]["api-keys.json"]
    assert key not in stored
    assert [k.name for k in read_keys(keys_file).keys] == ["ops"]
    assert '"name": "ops"' in stored
    inference = by_component(objects, "Deployment", "inference")
    assert inference["spec"]["template"]["spec"]["volumes"][-1]["secret"]["secretName"] == (
        "flts-api-keys"
    )


def test_embedded_mounts_given_keys_and_otherwise_lets_flts_up_mint_one(
    renders: dict[str, Objects], render: Render
) -> None:
    pod = by_component(renders["default"], "Deployment", "embedded")["spec"]["template"]["spec"]
    assert "FLTS_SECURITY__KEYS_FILE" not in env_of(pod["containers"][0])
    keyed = render("--set", "security.apiKeys.existingSecret=mine")
    pod = by_component(keyed, "Deployment", "embedded")["spec"]["template"]["spec"]
    assert env_of(pod["containers"][0])["FLTS_SECURITY__KEYS_FILE"] == KEYS_PATH


@pytest.mark.parametrize("name", ["distributed", "small-cluster"])
def test_network_policies_isolate_every_flts_pod(renders: dict[str, Objects], name: str) -> None:
    objects = renders[name]
    deployments = _flts_deployments(objects)
    assert len(deployments) >= 5
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        policies = _policies_for(objects, labels)
        kinds = {t for p in policies for t in p["spec"]["policyTypes"]}
        assert kinds == {"Ingress", "Egress"}, deployment["metadata"]["name"]
        ports = _ingress_ports(policies)
        container_ports = {
            p["containerPort"]
            for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        component = _component(deployment)
        if component in FRONT:
            # Clients reach the API port (only the configured clients in the example).
            (api_port,) = container_ports
            assert api_port in ports
            if name == "distributed":
                assert all(peers is not None for peers in ports[api_port])
        else:
            # A worker: its health port for Prometheus, nothing else from outside the release.
            assert set(ports) <= {9100, 8000, 0}, ports
            assert ports[9100] == [
                [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                    }
                ]
            ]
            internal = [p for p in policies if p["metadata"]["name"] == "flts-internal"]
            assert internal, "workers take traffic only from the release's own pods"
        egress = [r for p in policies for r in p["spec"].get("egress", [])]
        egress_ports = {port["port"] for rule in egress for port in rule.get("ports", [])}
        assert {53, 9092, 9000, 5000} <= egress_ports
    # The dev backends are not FLTS pods: no FLTS policy selects them.
    for backend in of_kind(objects, "Deployment"):
        if _component(backend) in {"kafka", "minio", "postgres", "mlflow"}:
            assert not _policies_for(objects, backend["spec"]["template"]["metadata"]["labels"])


def test_embedded_network_policy(renders: dict[str, Objects]) -> None:
    objects = renders["embedded"]
    pod = by_component(objects, "Deployment", "embedded")["spec"]["template"]["metadata"]["labels"]
    policies = _policies_for(objects, pod)
    assert {8000, 8001} <= set(_ingress_ports(policies))
    egress = [r for p in policies for r in p["spec"].get("egress", [])]
    assert {port["port"] for rule in egress for port in rule["ports"]} == {53}


def test_network_policies_can_be_turned_off(render: Render) -> None:
    objects = render("-f", str(EXAMPLES["distributed"]), "--set", "networkPolicy.enabled=false")
    assert not of_kind(objects, "NetworkPolicy")
