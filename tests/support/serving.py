"""How the test stacks serve: Triton's gRPC protocol on Serve's gRPC proxy next to
HTTP, and the multi-raylet cluster the fault and soak tests kill nodes of."""

from __future__ import annotations

import ray
from ray.cluster_utils import Cluster

GRPC_SERVICER = "app.grpc.servicer.add_inference_service_to_server"


def start_multiraylet_cluster(num_cpus: int = 4, num_gpus: int = 2) -> Cluster:
    """A ``ray.cluster_utils.Cluster`` with its head raylet (tests add and kill worker
    raylets), this process connected as its driver."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": num_cpus, "num_gpus": num_gpus, "include_dashboard": False},
    )
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster
