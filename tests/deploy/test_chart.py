"""The Helm chart, checked on its rendered objects: each test names one way the system this
replaces broke on Kubernetes (a trainer without MODEL_TYPE, selector clashes, probes letting
model-less pods take traffic, no resource limits) and shows the chart makes it impossible."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flts.shards import Shard
from servers.k8s_tools import KUBERNETES_VERSION, ensure_kubernetes_validate

from .conftest import CHART, EXAMPLES, ROOT, Render, helm_template

Objects = list[dict[str, Any]]
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")


def of_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]


def by_component(objects: Objects, kind: str, component: str) -> dict[str, Any]:
    matches = [
        o
        for o in of_kind(objects, kind)
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} with component {component}"
    return matches[0]


def containers(objects: Objects) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], c)
        for o in objects
        if o["kind"] in LONG_RUNNING
        for c in o["spec"]["template"]["spec"]["containers"]
    ]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# ------------------------------------------------------------------ inference autoscaling


def test_hpa_has_exactly_the_specified_behaviour(renders: dict[str, Objects]) -> None:
    hpa = by_component(renders["distributed"], "HorizontalPodAutoscaler", "inference")
    spec = hpa["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 20)
    cpu = spec["metrics"][0]["resource"]
    assert cpu["name"] == "cpu"
    assert cpu["target"] == {"type": "Utilization", "averageUtilization": 70}
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 0
    assert up["policies"] == [{"type": "Pods", "value": 4, "periodSeconds": 15}]
    assert down["stabilizationWindowSeconds"] == 60
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    target = spec["scaleTargetRef"]
    deployment = by_component(renders["distributed"], "Deployment", "inference")
    name = deployment["metadata"]["name"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


def test_in_flight_metric_is_optional_and_configurable(render: Render) -> None:
    distributed = str(EXAMPLES["distributed"])
    with_metric = render("-f", distributed)
    metrics = by_component(with_metric, "HorizontalPodAutoscaler", "inference")["spec"]["metrics"]
    assert metrics[1]["pods"]["metric"]["name"] == "flts_http_requests_in_flight"
    assert metrics[1]["pods"]["target"] == {"type": "AverageValue", "averageValue": "16"}
    tuned = render(
        "-f", distributed,
        "--set", "inference.autoscaling.targetInFlightRequests=0",
        "--set", "inference.autoscaling.maxReplicas=7",
        "--set", "inference.autoscaling.behavior.scaleUp.pods=2",
    )  # fmt: skip
    spec = by_component(tuned, "HorizontalPodAutoscaler", "inference")["spec"]
    assert len(spec["metrics"]) == 1
    assert spec["maxReplicas"] == 7
    assert spec["behavior"]["scaleUp"]["policies"][0]["value"] == 2


def test_inference_has_service_and_disruption_budget(renders: dict[str, Objects]) -> None:
    objects = renders["distributed"]
    deployment = by_component(objects, "Deployment", "inference")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        obj = by_component(objects, kind, "inference")
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels.items(), kind
    pdb = by_component(objects, "PodDisruptionBudget", "inference")
    assert pdb["spec"]["minAvailable"] == 1


def test_each_shard_is_its_own_deployment_service_and_autoscaler(render: Render) -> None:
    objects = render("-f", str(EXAMPLES["distributed"]), "--set", "inference.shards=3")

    def inference(kind: str) -> Objects:
        return [
            o
            for o in of_kind(objects, kind)
            if o["metadata"]["labels"]["app.kubernetes.io/component"] == "inference"
        ]

    deployments = inference("Deployment")
    assert len(deployments) == 3
    shards = {}
    for deployment in deployments:
        env = {
            e["name"]: e.get("value")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        shards[deployment["metadata"]["name"]] = Shard.parse(env["FLTS_SERVING__SHARD"])
    assert sorted((s.index, s.count) for s in shards.values()) == [(0, 3), (1, 3), (2, 3)]
    # Every identifier has exactly one owning Deployment.
    for identifier in ("ElBorn", "LesCorts", "PobleSec", *(f"cell-{i}" for i in range(50))):
        assert sum(s.owns(identifier) for s in shards.values()) == 1
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in inference(kind):
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            selected = [name for name, labels in pods.items() if selector.items() <= labels.items()]
            assert selected == [obj["metadata"]["name"]], kind  # its own shard's pods only
    targets = sorted(
        h["spec"]["scaleTargetRef"]["name"] for h in inference("HorizontalPodAutoscaler")
    )
    assert targets == sorted(pods)


def test_one_shard_keeps_the_unsharded_names(renders: dict[str, Objects]) -> None:
    deployment = by_component(renders["distributed"], "Deployment", "inference")
    assert deployment["metadata"]["name"] == "flts-inference"
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FLTS_SERVING__SHARD" not in env


def test_each_monitor_shard_is_its_own_single_replica_deployment(render: Render) -> None:
    objects = render("-f", str(EXAMPLES["distributed"]), "--set", "monitor.shards=4")
    deployments = [
        o
        for o in of_kind(objects, "Deployment")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "monitor"
    ]
    assert sorted(d["metadata"]["name"] for d in deployments) == [
        f"flts-monitor-{k}" for k in range(4)
    ]
    shards = {}
    for deployment in deployments:
        spec = deployment["spec"]
        assert (spec["replicas"], spec["strategy"]["type"]) == (1, "Recreate")
        container = spec["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        shards[deployment["metadata"]["name"]] = Shard.parse(env["FLTS_LIVE__MONITOR_SHARD"])
        assert "FLTS_SERVING__SHARD" not in env
    assert sorted((s.index, s.count) for s in shards.values()) == [(k, 4) for k in range(4)]
    for identifier in ("ElBorn", "LesCorts", "PobleSec", *(f"cell-{i}" for i in range(50))):
        assert sum(s.owns(identifier) for s in shards.values()) == 1
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    for deployment in deployments:  # each selector picks its own shard's pods only
        selector = deployment["spec"]["selector"]["matchLabels"]
        selected = [name for name, labels in pods.items() if selector.items() <= labels.items()]
        assert selected == [deployment["metadata"]["name"]]
        assert selector["flts.io/shard"] == str(shards[selected[0]].index)


def test_one_monitor_shard_keeps_the_unsharded_name(renders: dict[str, Objects]) -> None:
    deployment = by_component(renders["distributed"], "Deployment", "monitor")
    assert deployment["metadata"]["name"] == "flts-monitor"
    assert "flts.io/shard" not in deployment["spec"]["selector"]["matchLabels"]
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FLTS_LIVE__MONITOR_SHARD" not in env


# ------------------------------------------------------------------ probes


def test_inference_readiness_means_model_loaded(renders: dict[str, Objects]) -> None:
    container = by_component(renders["distributed"], "Deployment", "inference")["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "slow imports survive"


@pytest.mark.parametrize("name", ["default", *EXAMPLES])
def test_every_long_running_container_has_all_three_probes(
    renders: dict[str, Objects], name: str
) -> None:
    for owner, container in containers(renders[name]):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, f"{owner}/{container['name']} has no {probe}"


def test_workers_are_probed_through_their_health_server(renders: dict[str, Objects]) -> None:
    objects = renders["distributed"]
    workers = [
        o
        for o in of_kind(objects, "Deployment")
        if o["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
    ]
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in workers}
    assert {
        "preprocess",
        "evaluate",
        "batch-inference",
        "trainer-lstm",
        "monitor",
        "forecaster",
        "observations",
    } <= components
    for deployment in workers:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = env_of(container)
        assert env["FLTS_METRICS_PORT"] == "9100"
        assert env["FLTS_METRICS_HOST"] == "0.0.0.0"
        assert container["ports"] == [{"name": "health", "containerPort": 9100, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == "9100"


# ------------------------------------------------------------------ trainers


@pytest.mark.parametrize("name", ["distributed", "small-cluster"])
def test_every_trainer_has_its_model_type(renders: dict[str, Objects], name: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    example = yaml.safe_load(EXAMPLES[name].read_text())
    expected = [t["modelType"] for t in example.get("trainers", values["trainers"])]
    trainers = [
        o
        for o in of_kind(renders[name], "Deployment")
        if o["metadata"]["labels"]["app.kubernetes.io/component"].startswith("trainer-")
    ]
    seen = []
    for deployment in trainers:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        model = container["args"][container["args"].index("--model") + 1]
        assert container["args"][:2] == ["worker", "train"]
        assert env_of(container)["FLTS_MODEL_TYPE"] == model
        assert deployment["metadata"]["labels"]["flts.io/model-type"] == model
        seen.append(model)
    assert sorted(seen) == sorted(expected)
    config = by_component(renders[name], "ConfigMap", "config")["data"]
    assert json.loads(config["FLTS_EVALUATION__EXPECTED_MODELS"]) == expected


def _write(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_a_trainer_without_model_type_does_not_render(helm: Path, tmp_path: Path) -> None:
    values = _write(
        tmp_path,
        {"trainers": [{"replicas": 1, "resources": {"requests": {"cpu": 1, "memory": "1Gi"},
                                                    "limits": {"cpu": 1, "memory": "1Gi"}}}]},
    )  # fmt: skip
    args = ("-f", str(EXAMPLES["distributed"]), "-f", values)
    by_schema = helm_template(helm, *args)
    assert by_schema.returncode != 0
    assert "modelType" in by_schema.stderr
    # Even with the schema switched off the template itself refuses.
    by_template = helm_template(helm, *args, "--skip-schema-validation")
    assert by_template.returncode != 0
    assert "trainers[0].modelType is required" in by_template.stderr


def test_a_duplicate_trainer_does_not_render(helm: Path, tmp_path: Path) -> None:
    trainer = {"modelType": "RIDGE", "replicas": 2,
               "resources": {"requests": {"cpu": 1, "memory": "1Gi"},
                             "limits": {"cpu": 1, "memory": "1Gi"}}}  # fmt: skip
    values = _write(tmp_path, {"trainers": [trainer, {**trainer, "replicas": 1}]})
    result = helm_template(helm, "-f", str(EXAMPLES["distributed"]), "-f", values)
    assert result.returncode != 0
    assert "listed twice" in result.stderr


# ------------------------------------------------------------------ resources, images, security


@pytest.mark.parametrize("name", ["default", *EXAMPLES])
def test_every_container_has_requests_and_limits(renders: dict[str, Objects], name: str) -> None:
    found = containers(renders[name])
    assert found
    for owner, container in found:
        resources = container.get("resources", {})
        for side in ("requests", "limits"):
            for key in ("cpu", "memory"):
                assert key in resources.get(side, {}), f"{owner}/{container['name']} {side}.{key}"


@pytest.mark.parametrize("name", ["default", *EXAMPLES])
def test_no_image_is_latest_or_untagged(renders: dict[str, Objects], name: str) -> None:
    for owner, container in containers(renders[name]):
        image = container["image"]
        assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], f"{owner}: {image}"
        assert not image.endswith(":latest"), f"{owner}: {image}"


def test_latest_tag_is_refused(helm: Path) -> None:
    result = helm_template(helm, "--set", "image.tag=latest", "--skip-schema-validation")
    assert result.returncode != 0
    assert "must not be `latest`" in result.stderr
    assert helm_template(helm, "--set", "image.tag=latest").returncode != 0


@pytest.mark.parametrize("name", ["default", *EXAMPLES])
def test_thread_count_matches_the_cpu_limit(renders: dict[str, Objects], name: str) -> None:
    for owner, container in containers(renders[name]):
        env = env_of(container)
        if "OMP_NUM_THREADS" not in env:
            assert owner.split("-")[-1] in {"kafka", "minio", "postgres", "mlflow"}, owner
            continue
        expected = max(1, math.floor(cpu_cores(container["resources"]["limits"]["cpu"])))
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(expected), owner


@pytest.mark.parametrize("name", ["default", "distributed"])
def test_flts_pods_run_as_non_root_on_a_read_only_root(
    renders: dict[str, Objects], name: str
) -> None:
    for obj in of_kind(renders[name], "Deployment"):
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


# ------------------------------------------------------------------ configuration and secrets


def test_values_default_no_backend_url_or_credential() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["backends"].values()) == {""}
    assert values["secrets"] == {"existingSecret": "", "values": {}}


def test_urls_go_to_the_configmap_and_credentials_to_a_secret(
    renders: dict[str, Objects], render: Render
) -> None:
    objects = renders["distributed"]
    config = by_component(objects, "ConfigMap", "config")["data"]
    assert "FLTS_BUS_URL" not in config, "the bus URL may hold credentials: a Secret"
    assert config["FLTS_STORAGE_URL"] == "s3://flts-artifacts/prod"
    assert config["FLTS_TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert not any("SECRET" in key or "PASSWORD" in key for key in config)
    secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    assert set(secrets) == {"flts-bus"}, "existingSecret: the chart makes only the bus Secret"
    assert secrets["flts-bus"]["stringData"]["FLTS_BUS_URL"].startswith("kafka://")
    refs = {
        ref["secretRef"]["name"]
        for _, c in containers(objects)
        for ref in c.get("envFrom", [])
        if "secretRef" in ref
    }
    assert refs == {"flts-credentials", "flts-bus"}
    inline = render(
        "-f", str(EXAMPLES["distributed"]),
        "--set", "secrets.existingSecret=",
        "--set", "secrets.values.AWS_SECRET_ACCESS_KEY=s3cr3t",
        "--set", "backends.busUrl=kafka://k:9092?sasl.password=hunter2",
    )  # fmt: skip
    made = {s["metadata"]["name"]: s for s in of_kind(inline, "Secret")}
    assert made["flts-credentials"]["stringData"] == {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    assert made["flts-bus"]["stringData"]["FLTS_BUS_URL"].endswith("sasl.password=hunter2")
    for obj in inline:
        if obj["kind"] != "Secret":
            assert "hunter2" not in json.dumps(obj), obj["metadata"]["name"]


def test_distributed_without_backend_urls_does_not_render(helm: Path) -> None:
    result = helm_template(helm, "--set", "mode=distributed")
    assert result.returncode != 0
    assert "backends.busUrl is required" in result.stderr


def test_distributed_refuses_the_sqlite_bus(helm: Path) -> None:
    result = helm_template(
        helm, "-f", str(EXAMPLES["distributed"]), "--set", "backends.busUrl=sqlite:///x.db"
    )
    assert result.returncode != 0


# ------------------------------------------------------------------ labels and selectors


def _selectors(objects: Objects) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for obj in objects:
        spec = obj.get("spec", {})
        selector = spec.get("selector")
        if selector is not None:
            out[(obj["kind"], obj["metadata"]["name"])] = selector
    return out


def test_selectors_do_not_change_with_values(render: Render) -> None:
    """Selectors are immutable on a Deployment: an upgrade that changes the image, replica
    counts or resources must produce byte-identical selectors."""
    base = ("-f", str(EXAMPLES["distributed"]))
    first = render(*base)
    second = render(
        *base,
        "--set", "image.tag=9.9.9",
        "--set", "inference.autoscaling.enabled=false",
        "--set", "inference.replicas=5",
        "--set", "gateway.resources.limits.cpu=3",
        "--set", "preprocess.replicas=3",
    )  # fmt: skip
    assert _selectors(first) == _selectors(second)
    assert len(_selectors(first)) >= 10
    for (kind, name), selector in _selectors(first).items():
        labels = selector.get("matchLabels", selector)
        assert set(labels) == {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
        }, f"{kind}/{name}"


@pytest.mark.parametrize("name", ["default", *EXAMPLES])
def test_standard_labels_everywhere(renders: dict[str, Objects], name: str) -> None:
    for obj in renders[name]:
        labels = obj["metadata"]["labels"]
        for key in ("name", "instance", "component", "version", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in LONG_RUNNING:
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()


# ------------------------------------------------------------------ embedded mode


def test_embedded_is_one_pod_with_a_volume_and_no_hpa(renders: dict[str, Objects]) -> None:
    for name in ("default", "embedded"):
        objects = renders[name]
        deployments = of_kind(objects, "Deployment")
        assert len(deployments) == 1
        spec = deployments[0]["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"]["type"] == "Recreate"
        assert spec["template"]["spec"]["containers"][0]["args"][0] == "up"
        assert not of_kind(objects, "HorizontalPodAutoscaler")
        assert len(of_kind(objects, "PersistentVolumeClaim")) == 1


def test_embedded_schema_forbids_more_replicas(helm: Path) -> None:
    result = helm_template(helm, "--set", "embedded.replicas=2")
    assert result.returncode != 0
    assert "/embedded/replicas" in result.stderr
    skipped = helm_template(helm, "--set", "embedded.replicas=3", "--skip-schema-validation")
    assert skipped.returncode != 0
    assert "embedded.replicas must be 1" in skipped.stderr


def test_dev_backends_are_marked_dev_only(renders: dict[str, Objects]) -> None:
    objects = renders["small-cluster"]
    dev = [o for o in objects if o["metadata"]["labels"].get("flts.io/dev-only") == "true"]
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in dev} == {
        "kafka",
        "minio",
        "postgres",
        "mlflow",
    }
    assert not any(o["metadata"]["labels"].get("flts.io/dev-only") for o in renders["distributed"])


# ------------------------------------------------------------------ Kubernetes schemas


def test_every_render_validates_against_kubernetes_schemas(helm: Path, tmp_path: Path) -> None:
    validate = ensure_kubernetes_validate(ROOT)

    sharded = ["-f", str(EXAMPLES["distributed"]), "--set", "inference.shards=3"]
    variants = [("default", []), *[(n, ["-f", str(p)]) for n, p in EXAMPLES.items()]]
    for name, extra in [*variants, ("sharded", sharded)]:
        rendered = helm_template(helm, *extra)
        assert rendered.returncode == 0, rendered.stderr
        path = tmp_path / f"{name}.yaml"
        path.write_text(rendered.stdout)
        result = subprocess.run(
            [str(validate), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    # The validator can fail: an unknown field is rejected in strict mode.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], "
        "selectr: {a: b}}\n"
    )
    result = subprocess.run(
        [str(validate), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
