"""The KubeRay deployment of the application: render and check ``kuberay/``.

``python -m app.kuberay render`` writes ``kuberay/base/serve-config.patch.yaml`` (the
RayService's ``serveConfigV2``) from ``serve_configs/prod.yaml``;
``python -m app.kuberay check`` fails when that file is stale or when the manifests
break a rule of the KubeRay operator, or a deployment fits no worker group.
"""

from app.kuberay.checks import check_manifests
from app.kuberay.manifests import load_kustomization, load_worker_group_shapes
from app.kuberay.render import render_patch

__all__ = ["check_manifests", "load_kustomization", "load_worker_group_shapes", "render_patch"]
