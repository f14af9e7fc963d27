"""kuberay/: the CRD schemas, the operator's own rules, and the generated serveConfigV2."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from app.kuberay.checks import (
    check_dockerfile_ray_version,
    check_fit,
    check_gpu_requests,
    check_manifests,
    check_names,
    check_ray_groups,
    check_upgrade_strategy,
)
from app.kuberay.manifests import KUBERAY_DIR, find_object, load_kustomization, ray_groups
from app.kuberay.render import PATCH_PATH, PROD_CONFIG, render_patch, serve_config_from_patch

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return load_kustomization()


@pytest.fixture()
def service(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(find_object(objects, "RayService"))


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.v1.schema.json").read_text())
    return schema


def _validate(document: dict[str, Any], schema_name: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema(schema_name))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_rayservice_validates_against_the_crd_schema(service: dict[str, Any]) -> None:
    assert _validate(service, "rayservice") == []


def test_its_cluster_validates_as_a_raycluster_spec(service: dict[str, Any]) -> None:
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "triton-serve-abcde"},
        "spec": service["spec"]["rayClusterConfig"],
    }
    assert _validate(cluster, "raycluster") == []


def test_schema_validation_catches_a_number_in_ray_start_params(service: dict[str, Any]) -> None:
    service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert any("rayStartParams" in e for e in _validate(service, "rayservice"))


def test_every_ray_object_in_the_directory_is_in_the_kustomization(
    objects: list[dict[str, Any]],
) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["Namespace", "PersistentVolumeClaim", "RayService"]
    assert all(o["metadata"].get("namespace") == "triton-serve" for o in objects[1:])


def test_manifests_pass_every_operator_rule_and_fit_check() -> None:
    assert check_manifests() == []


def test_serve_config_v2_is_prod_yaml_and_parses_as_serve_deploy_schema(
    service: dict[str, Any],
) -> None:
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    prod = yaml.safe_load(PROD_CONFIG.read_text())
    assert embedded["applications"] == prod["applications"]
    assert embedded == prod


def test_rendered_patch_is_current() -> None:
    rendered = render_patch()
    assert PATCH_PATH.read_text() == rendered, "run `python -m app.kuberay render`"
    assert serve_config_from_patch(rendered) == yaml.safe_load(PROD_CONFIG.read_text())


def test_render_notices_a_changed_serve_config(tmp_path: Path) -> None:
    changed = yaml.safe_load(PROD_CONFIG.read_text())
    changed["applications"][0]["args"]["router"]["num_replicas"] = 3
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert render_patch(path) != PATCH_PATH.read_text()
    assert check_manifests(serve_config_path=path)[0].endswith(
        "is stale: run `python -m app.kuberay render`"
    )


def test_render_refuses_an_invalid_serve_config(tmp_path: Path) -> None:
    broken = yaml.safe_load(PROD_CONFIG.read_text())
    broken["applications"][0]["args"]["deployments"][0]["num_gpus"] = 1.5
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match="num_gpus"):
        render_patch(path)


def test_ray_version_is_the_installed_one_and_the_image_pin(service: dict[str, Any]) -> None:
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert check_dockerfile_ray_version(cluster, KUBERAY_DIR) == []


def test_head_runs_no_replica(service: dict[str, Any]) -> None:
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["num-gpus"] == "0"
    ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports["dashboard"] == 8265 and ports["serve"] == 8000


def test_gpu_groups_have_what_triton_needs(service: dict[str, Any]) -> None:
    groups = [g for g in ray_groups(service["spec"]["rayClusterConfig"]) if not g.is_head]
    gpu_groups = [g for g in groups if "nvidia.com/gpu" in g.container["resources"]["limits"]]
    assert {g.name for g in gpu_groups} == {"gpu-vllm", "gpu-trtllm"}
    for group in gpu_groups:
        pod = group.spec["template"]["spec"]
        assert group.spec["minReplicas"] == 0
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == (
            "triton-serve-model-cache"
        )
        mounts = {m["name"]: m["mountPath"] for m in group.container["volumeMounts"]}
        assert mounts == {"dshm": "/dev/shm", "model-cache": "/models/cache"}
        env = {e["name"]: e for e in group.container["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
        assert group.container["readinessProbe"]["httpGet"] == {"path": "/-/healthz", "port": 8000}
        assert "livenessProbe" in group.container
    flavour = {g.name: g.container["image"].rsplit(":", 1)[1] for g in gpu_groups}
    assert flavour == {"gpu-vllm": "vllm", "gpu-trtllm": "trtllm"}


def test_autoscaling_and_upgrade_settings(service: dict[str, Any]) -> None:
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["version"] == "v2"
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert service["spec"]["upgradeStrategy"]["type"] == "NewClusterWithIncrementalUpgrade"
    options = service["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]
    assert options["maxSurgePercent"] < 100  # never a second full cluster of GPUs


# ---- each operator rule catches its mistake ----


def test_names_too_long_for_generated_objects(service: dict[str, Any]) -> None:
    service["metadata"]["name"] = "a" * 48
    assert any("at most 47" in p for p in check_names(service))
    service["metadata"]["name"] = "triton-serve"
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"] = "g" * 40
    assert any("KubeRay truncates" in p for p in check_names(service))


def test_replicas_outside_bounds(service: dict[str, Any]) -> None:
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
    group["replicas"] = group["maxReplicas"] + 1
    assert any("minReplicas" in p for p in check_ray_groups(service["spec"]["rayClusterConfig"]))


def test_ray_start_params_must_be_strings(service: dict[str, Any]) -> None:
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["rayStartParams"]["num-gpus"] = 0
    assert any(
        "must be a string" in p for p in check_ray_groups(service["spec"]["rayClusterConfig"])
    )


def test_resource_set_twice(service: dict[str, Any]) -> None:
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
    group["resources"] = {"triton_vllm": "2"}
    problems = check_ray_groups(service["spec"]["rayClusterConfig"])
    assert any("both in rayStartParams" in p for p in problems)
    del group["resources"]
    group["rayStartParams"]["num-gpus"] = "1"  # the container has 2
    problems = check_ray_groups(service["spec"]["rayClusterConfig"])
    assert any("num-gpus (1) differs" in p for p in problems)


def test_gpu_request_must_equal_limit(service: dict[str, Any]) -> None:
    container = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][2]["template"]["spec"][
        "containers"
    ][0]
    container["resources"]["requests"]["nvidia.com/gpu"] = "0"
    assert any("must equal its limit" in p for p in check_gpu_requests([service]))


def test_engine_build_job_requests_equal_limits() -> None:
    job = yaml.safe_load((KUBERAY_DIR / "jobs" / "trtllm-engine-build.yaml").read_text())
    assert check_gpu_requests([job]) == []
    mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "model-cache", "mountPath": "/models/cache"} in mounts


def test_unknown_upgrade_strategy(service: dict[str, Any]) -> None:
    service["spec"]["upgradeStrategy"] = {"type": "BlueGreen"}
    assert check_upgrade_strategy(service)
    service["spec"]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade"}
    assert any("gatewayClassName" in p for p in check_upgrade_strategy(service))


# ---- every deployment fits a worker group ----


def _prod() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROD_CONFIG.read_text())
    return config


def _group(service: dict[str, Any], name: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return next(g for g in groups if g["groupName"] == name)


def test_prod_fits_the_worker_groups(service: dict[str, Any]) -> None:
    assert check_fit(service["spec"]["rayClusterConfig"], _prod()) == []


def test_a_replica_bigger_than_any_pod_is_reported(service: dict[str, Any]) -> None:
    prod = _prod()
    prod["applications"][0]["args"]["deployments"][0]["num_cpus"] = 64
    problems = check_fit(service["spec"]["rayClusterConfig"], prod)
    assert any("'mixtral-8x7b-vllm': a replica needs" in p for p in problems)


def test_too_few_gpu_pods_for_max_replicas(service: dict[str, Any]) -> None:
    _group(service, "gpu-vllm")["maxReplicas"] = 2
    problems = check_fit(service["spec"]["rayClusterConfig"], _prod())
    assert any("need 6 GPUs at their max replicas, maxReplicas gives 4" in p for p in problems)


def test_custom_resource_units_must_cover_the_replicas_a_pod_holds(
    service: dict[str, Any],
) -> None:
    _group(service, "gpu-trtllm")["rayStartParams"]["resources"] = '"{\\"triton_trtllm\\": 1}"'
    problems = check_fit(service["spec"]["rayClusterConfig"], _prod())
    assert any("'embedding-gpu': a pod holds 4 replicas" in p for p in problems)


def test_gpu_memory_of_the_selected_product(service: dict[str, Any]) -> None:
    pod = _group(service, "gpu-vllm")["template"]["spec"]
    pod["nodeSelector"]["nvidia.com/gpu.product"] = "NVIDIA-L40S"
    problems = check_fit(service["spec"]["rayClusterConfig"], _prod())
    assert any("exceeds the 48 GB of the selected GPU" in p for p in problems)
