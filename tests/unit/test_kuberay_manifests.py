"""kuberay/: the CRD schemas (unknown fields refused) of the KubeRay versions it claims,
the operator's own rules, what the operator builds from it per version, and the
generated serveConfigV2."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from app.kuberay.checks import (
    check_disruption,
    check_dockerfile_ray_version,
    check_fit,
    check_gpu_requests,
    check_grpc_reachable,
    check_head,
    check_images,
    check_ingress,
    check_manifests,
    check_memory,
    check_model_cache,
    check_names,
    check_ray_groups,
    check_scale_from_zero,
    check_service_monitor,
    check_termination_grace,
    check_upgrade_strategy,
    placeholder_images,
    upgrade_cost,
)
from app.kuberay.manifests import KUBERAY_DIR, OVERLAYS, find_object, load_kustomization
from app.kuberay.operator import serve_service
from app.kuberay.render import PATCH_PATH, PROD_CONFIG, render_patch, serve_config_from_patch
from app.kuberay.schema import load_schema, validate

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
MINIMUM, LATEST = "1.4.2", "1.7.0"
ROOT = KUBERAY_DIR.parent


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return load_kustomization()


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[dict[str, Any]]]:
    return {p.name: load_kustomization(p) for p in sorted(OVERLAYS.iterdir())}


@pytest.fixture()
def service(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(find_object(objects, "RayService"))


@pytest.fixture()
def cluster(service: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = service["spec"]["rayClusterConfig"]
    return spec


def _errors(document: dict[str, Any], version: str) -> list[str]:
    return validate(document, load_schema(SCHEMAS / f"rayservices-v{version}.json.gz"))


def _group(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = cluster["workerGroupSpecs"]
    return next(g for g in groups if g["groupName"] == name)


def _prod() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROD_CONFIG.read_text())
    return config


# ---- the CRDs of the versions it claims, unknown fields refused ----


@pytest.mark.parametrize("version", [MINIMUM, "1.5.1", LATEST])
def test_default_validates_strictly_on_every_supported_version(
    service: dict[str, Any], version: str
) -> None:
    assert _errors(service, version) == []


@pytest.mark.parametrize(
    ("where", "typo"),
    [
        (lambda s: s["spec"], "upgradeStrategyy"),
        (
            lambda s: s["spec"]["rayClusterConfig"]["workerGroupSpecs"][2]["template"]["spec"],
            "nodeSelectorr",
        ),
        (
            lambda s: s["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
                "containers"
            ][0],
            "resourcez",
        ),
    ],
)
@pytest.mark.parametrize("version", [MINIMUM, LATEST])
def test_strict_validation_refuses_a_misspelt_field(
    service: dict[str, Any], where: Any, typo: str, version: str
) -> None:
    where(service)[typo] = {}
    assert any(typo in e for e in _errors(service, version))


def test_schema_validation_catches_a_number_in_ray_start_params(service: dict[str, Any]) -> None:
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert any("rayStartParams" in e for e in _errors(service, MINIMUM))


def test_v1_4_refuses_what_the_overlays_add(overlays: dict[str, list[dict[str, Any]]]) -> None:
    """Why the overlays are overlays: v1.4's CRD knows neither field."""
    upgrade = find_object(overlays["incremental-upgrade"], "RayService")
    auth = find_object(overlays["token-auth"], "RayService")
    assert any("clusterUpgradeOptions" in e for e in _errors(upgrade, MINIMUM))
    assert any("authOptions" in e for e in _errors(auth, MINIMUM))
    assert check_upgrade_strategy(upgrade, (1, 4))  # and v1.4's operator refuses the type


@pytest.mark.parametrize(
    ("name", "versions"), [("incremental-upgrade", [LATEST]), ("token-auth", ["1.5.1", LATEST])]
)
def test_overlays_validate_strictly_where_they_are_supported(
    overlays: dict[str, list[dict[str, Any]]], name: str, versions: list[str]
) -> None:
    for version in versions:
        assert _errors(find_object(overlays[name], "RayService"), version) == []


def test_incremental_overlay_routes_grpc_and_drops_the_ignored_service(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    objects = overlays["incremental-upgrade"]
    service = find_object(objects, "RayService")
    assert service["spec"]["upgradeStrategy"]["type"] == "NewClusterWithIncrementalUpgrade"
    assert "serveService" not in service["spec"]
    route = find_object(objects, "GRPCRoute")
    gateway = find_object(objects, "Gateway")
    assert route["spec"]["parentRefs"][0]["name"] == gateway["metadata"]["name"]
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    grpc = find_object(objects, "Service", backend["name"])
    assert backend["port"] in {p["port"] for p in grpc["spec"]["ports"]}
    assert check_manifests(OVERLAYS / "incremental-upgrade") == []
    assert all(o["metadata"].get("namespace") == "triton-serve" for o in objects[1:])


# ---- what KubeRay builds, per version ----


def test_serve_service_ports_per_operator_version(service: dict[str, Any]) -> None:
    v14 = serve_service(service, (1, 4), "c")
    v15 = serve_service(service, (1, 5), "c")
    v16 = serve_service(service, (1, 6), "c")
    assert v14["name"] == v15["name"] == v16["name"] == "triton-serve-ingress"
    assert v14["ports"] == v15["ports"] == {"serve": 8000}
    assert v16["ports"] == {"serve": 8000, "serve-grpc": 8001}
    service["spec"]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade"}
    assert serve_service(service, (1, 7), "triton-serve-abcde")["name"] == (
        "triton-serve-abcde-serve-svc"
    )
    assert serve_service(service, (1, 6), "c", gate_on=False)["name"] == "triton-serve-ingress"


def _monitors() -> list[dict[str, Any]]:
    return load_kustomization(KUBERAY_DIR / "monitoring")


def test_service_monitor_scrapes_a_port_of_the_service_kuberay_builds(
    service: dict[str, Any], overlays: dict[str, list[dict[str, Any]]]
) -> None:
    assert check_service_monitor(_monitors(), service) == []
    upgrade = find_object(overlays["incremental-upgrade"], "RayService")
    assert check_service_monitor(_monitors(), upgrade) == []


def test_service_monitor_on_a_port_v1_4_drops_is_reported(service: dict[str, Any]) -> None:
    monitors = _monitors()
    find_object(monitors, "ServiceMonitor")["spec"]["endpoints"][0]["port"] = "serve-grpc"
    problems = check_service_monitor(monitors, service)
    assert any("v1.4" in p for p in problems) and not any("v1.6" in p for p in problems)


def test_grpc_is_reachable_on_every_version_and_needs_its_service(
    objects: list[dict[str, Any]],
) -> None:
    assert check_grpc_reachable(objects) == []
    without = [o for o in objects if o["metadata"]["name"] != "triton-serve-grpc"]
    problems = check_grpc_reachable(without)
    assert [p.split(":")[0] for p in problems] == ["KubeRay v1.4", "KubeRay v1.5"]


# ---- the operator's rules and this repository's, each catching its mistake ----


def test_manifests_pass_every_check() -> None:
    assert check_manifests() == []


def test_upgrade_cost_is_the_minimum_footprint_again(
    cluster: dict[str, Any], service: dict[str, Any]
) -> None:
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    cost = upgrade_cost(cluster, serve_config)
    # Mixtral fills a 2-GPU pod, CodeLlama takes a second, Llama + embedding share a GPU.
    assert cost.min_pods == {"cpu-ingress": 2, "gpu-vllm": 2, "gpu-trtllm": 1}
    assert cost.gpus(cost.min_pods) == 5
    assert "needs 5 more GPUs (3 GPU pods)" in cost.summary()


def test_spread_fragmentation_needs_a_fourth_vllm_pod(cluster: dict[str, Any]) -> None:
    _group(cluster, "gpu-vllm")["maxReplicas"] = 3  # 6 GPUs: the GPU sum would fit
    problems = check_fit(cluster, _prod())
    assert any("'gpu-vllm': SPREAD placement" in p and "need 4 pods" in p for p in problems)


def test_names_too_long_for_generated_objects(service: dict[str, Any]) -> None:
    service["metadata"]["name"] = "a" * 48
    assert any("at most 47" in p for p in check_names(service))
    service["metadata"]["name"] = "triton-serve"
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"] = "g" * 40
    assert any("KubeRay truncates" in p for p in check_names(service))


def test_replicas_outside_bounds(cluster: dict[str, Any]) -> None:
    group = cluster["workerGroupSpecs"][1]
    group["replicas"] = group["maxReplicas"] + 1
    assert any("minReplicas" in p for p in check_ray_groups(cluster))


def test_resource_set_twice(cluster: dict[str, Any]) -> None:
    group = _group(cluster, "gpu-vllm")
    group["resources"] = {"triton_vllm": "2"}
    assert any("both in rayStartParams" in p for p in check_ray_groups(cluster))
    del group["resources"]
    group["rayStartParams"]["num-gpus"] = "1"  # the container has 2
    assert any("num-gpus (1) differs" in p for p in check_ray_groups(cluster))


def test_gpu_request_must_equal_limit(service: dict[str, Any], cluster: dict[str, Any]) -> None:
    container = _group(cluster, "gpu-trtllm")["template"]["spec"]["containers"][0]
    container["resources"]["requests"]["nvidia.com/gpu"] = "0"
    assert any("must equal its limit" in p for p in check_gpu_requests([service]))


def test_v1_4_refuses_incremental_upgrades(service: dict[str, Any]) -> None:
    service["spec"]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade"}
    assert any("v1.4 accepts only" in p for p in check_upgrade_strategy(service))
    assert any("gatewayClassName" in p for p in check_upgrade_strategy(service, (1, 7)))
    service["spec"]["upgradeStrategy"] = {"type": "BlueGreen"}
    assert check_upgrade_strategy(service, (1, 7))


def test_head_serves_nothing_and_survives(service: dict[str, Any]) -> None:
    assert check_head(service) == []
    spec = service["spec"]
    spec["excludeHeadPodFromServeSvc"] = False
    spec["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = "1"
    spec["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisPassword"] = {"value": "x"}
    spec["serviceUnhealthySecondThreshold"] = 900
    problems = check_head(service)
    assert len(problems) == 4, problems


def test_routers_are_pinned_to_spread_ingress_pods(cluster: dict[str, Any]) -> None:
    assert check_ingress(cluster, _prod()) == []
    prod = _prod()
    del prod["applications"][0]["deployments"]
    assert any("no custom resource" in p for p in check_ingress(cluster, prod))
    ingress = _group(cluster, "cpu-ingress")
    ingress["minReplicas"] = 1
    del ingress["template"]["spec"]["topologySpreadConstraints"]
    _group(cluster, "gpu-vllm")["rayStartParams"]["resources"] = (
        '"{\\"triton_vllm\\": 2, \\"triton_ingress\\": 1}"'
    )
    problems = check_ingress(cluster, _prod())
    assert any("minReplicas >= 2" in p for p in problems)
    assert any("hostname" in p for p in problems)
    assert any("GPU group advertises" in p for p in problems)


def test_gpu_groups_select_labels_a_node_pool_declares(cluster: dict[str, Any]) -> None:
    assert check_scale_from_zero(cluster) == []
    pod = _group(cluster, "gpu-vllm")["template"]["spec"]
    pod["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    problems = check_scale_from_zero(cluster)
    assert any("only once it runs" in p for p in problems)
    assert any("triton-serve.io/gpu-pool missing" in p for p in problems)


def test_gpu_memory_of_the_selected_pool(cluster: dict[str, Any]) -> None:
    _group(cluster, "gpu-vllm")["template"]["spec"]["nodeSelector"] = {
        "triton-serve.io/gpu-pool": "l40s-48gb"
    }
    assert any("exceeds the 48 GB" in p for p in check_fit(cluster, _prod()))


def test_head_and_gpu_pods_resist_disruption(
    objects: list[dict[str, Any]], cluster: dict[str, Any]
) -> None:
    assert check_disruption(objects, cluster) == []
    del _group(cluster, "gpu-trtllm")["template"]["metadata"]["annotations"]
    no_pdbs = [o for o in objects if o["kind"] != "PodDisruptionBudget"]
    problems = check_disruption(no_pdbs, cluster)
    assert any("'gpu-trtllm': annotations" in p for p in problems)
    assert sum("PodDisruptionBudget" in p for p in problems) == 3  # head + 2 GPU groups


def test_grace_period_outlasts_serve_and_triton(cluster: dict[str, Any]) -> None:
    assert check_termination_grace(cluster, _prod()) == []
    _group(cluster, "gpu-vllm")["template"]["spec"]["terminationGracePeriodSeconds"] = 60
    assert any("'gpu-vllm'" in p for p in check_termination_grace(cluster, _prod()))


def test_shm_holds_the_object_store_and_what_else_uses_it(cluster: dict[str, Any]) -> None:
    assert check_memory(cluster) == []
    del cluster["headGroupSpec"]["rayStartParams"]["object-store-memory"]
    _group(cluster, "gpu-trtllm")["rayStartParams"]["object-store-memory"] = str(12 * 2**30)
    problems = check_memory(cluster)
    assert any("'head': rayStartParams.object-store-memory missing" in p for p in problems)
    assert any("'gpu-trtllm': /dev/shm 16 GiB" in p for p in problems)


def test_model_cache_read_only_offline_and_classed(
    objects: list[dict[str, Any]], cluster: dict[str, Any]
) -> None:
    assert check_model_cache(cluster, objects) == []
    container = _group(cluster, "gpu-vllm")["template"]["spec"]["containers"][0]
    container["volumeMounts"][1]["readOnly"] = False
    container["env"] = [{"name": "HF_TOKEN", "value": "x"}]
    pvcs = copy.deepcopy([o for o in objects if o["kind"] == "PersistentVolumeClaim"])
    del pvcs[0]["spec"]["storageClassName"]
    problems = check_model_cache(cluster, pvcs)
    assert len(problems) == 4, problems


def test_images_pinned_by_digest(objects: list[dict[str, Any]]) -> None:
    assert check_images(objects) == []
    assert len(placeholder_images(objects)) == 3  # docs/kubernetes.md says which to replace
    broken = copy.deepcopy(objects)
    head = find_object(broken, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["image"] = "registry.example.com/triton-serve:vllm"
    assert any("not pinned by digest" in p for p in check_images(broken))


def test_network_policy_keeps_ray_ports_to_the_cluster(objects: list[dict[str, Any]]) -> None:
    policy = find_object(objects, "NetworkPolicy", "triton-serve-ray")
    open_ports = {
        p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]
    }
    assert open_ports == {8000, 8001, 8080}  # never 8265 (dashboard, job API) or 6379


# ---- the serve config ----


def test_serve_config_v2_is_prod_yaml_and_parses_as_serve_deploy_schema(
    service: dict[str, Any],
) -> None:
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    assert embedded == yaml.safe_load(PROD_CONFIG.read_text())


def test_rendered_patch_is_current() -> None:
    rendered = render_patch()
    assert PATCH_PATH.read_text() == rendered, "run `python -m app.kuberay render`"
    assert serve_config_from_patch(rendered) == yaml.safe_load(PROD_CONFIG.read_text())


def test_render_notices_a_changed_serve_config(tmp_path: Path) -> None:
    changed = _prod()
    changed["applications"][0]["args"]["router"]["num_replicas"] = 3
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert render_patch(path) != PATCH_PATH.read_text()
    assert check_manifests(serve_config_path=path)[0].endswith(
        "is stale: run `python -m app.kuberay render`"
    )


def test_render_refuses_an_invalid_serve_config(tmp_path: Path) -> None:
    broken = _prod()
    broken["applications"][0]["args"]["deployments"][0]["num_gpus"] = 1.5
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match="num_gpus"):
        render_patch(path)


def test_ray_version_is_the_installed_one_and_the_image_pin(cluster: dict[str, Any]) -> None:
    assert cluster["rayVersion"] == ray.__version__
    assert check_dockerfile_ray_version(cluster, KUBERAY_DIR) == []


def test_model_download_job_fetches_every_vllm_model_prod_serves() -> None:
    job = yaml.safe_load((KUBERAY_DIR / "jobs" / "model-download.yaml").read_text())
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    listed = set(env["MODELS"]["value"].split())
    wanted = set()
    for dep in _prod()["applications"][0]["args"]["deployments"]:
        for model in dep["models"]:
            spec = ROOT / "model_repository" / model / "1" / "model.json"
            if spec.exists():
                wanted.add(json.loads(spec.read_text())["model"])
    assert wanted and wanted <= listed
    assert check_gpu_requests([job]) == []
