"""Where Serve replicas can land on the pods of a worker group, and how many pods that
takes in the worst case.

Serve schedules replicas with Ray's SPREAD strategy: a replica goes to a pod with room
that holds no replica of its deployment if there is one, else to any pod with room, and
only when no pod has room does the autoscaler add one. A pod left empty by a scale-down
stays until its idle timeout and takes the next replica that SPREAD sends there. So
replicas of small deployments can sit on several pods and leave none with room for a
whole-pod bundle (Mixtral's 2 GPUs, STRICT_PACK): GPU sums undercount the pods.

``worst_case_pods`` explores every order of scale-ups and scale-downs between each
deployment's min and max replicas (empty pods kept: the adversarial case) and returns
the most pods the group ever needs; ``min_footprint_pods`` is what a fresh cluster
needs for the min replicas (what an upgrade starts again).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = ["Replica", "min_footprint_pods", "worst_case_pods"]

_EPS = 1e-9


@dataclass(frozen=True)
class Replica:
    """One deployment's replicas: the resources one replica takes on one pod (its whole
    STRICT_PACK bundle) and its replica bounds."""

    name: str
    demand: tuple[tuple[str, float], ...]
    min_replicas: int
    max_replicas: int


Pod = tuple[str, ...]  # names of the deployments whose replicas it holds, sorted


def _used(pod: Pod, demands: dict[str, dict[str, float]]) -> dict[str, float]:
    used: dict[str, float] = {}
    for name in pod:
        for key, amount in demands[name].items():
            used[key] = used.get(key, 0.0) + amount
    return used


def _room(
    pod: Pod, name: str, node: dict[str, float], demands: dict[str, dict[str, float]]
) -> bool:
    used = _used(pod, demands)
    return all(
        used.get(k, 0.0) + v <= node.get(k, 0.0) + _EPS for k, v in demands[name].items() if v
    )


def _place(
    pods: list[Pod], name: str, node: dict[str, float], demands: dict[str, dict[str, float]]
) -> list[Pod]:
    """``pods`` after SPREAD places one replica of ``name`` (a new pod if none has room)."""
    with_room = [i for i, pod in enumerate(pods) if _room(pod, name, node, demands)]
    apart = [i for i in with_room if name not in pods[i]]
    if not with_room:
        return [*pods, (name,)]
    chosen = (apart or with_room)[0]
    out = list(pods)
    out[chosen] = tuple(sorted((*pods[chosen], name)))
    return out


def _state(pods: list[Pod]) -> tuple[Pod, ...]:
    return tuple(sorted(pods))


def min_footprint_pods(replicas: list[Replica], node: dict[str, float]) -> int:
    """Most pods the min replicas take on a fresh group, over every order of creation."""
    demands = {r.name: dict(r.demand) for r in replicas}
    wanted = [r.name for r in replicas for _ in range(r.min_replicas)]
    most = 0
    for order in set(itertools.permutations(wanted)):
        pods: list[Pod] = []
        for name in order:
            pods = _place(pods, name, node, demands)
        most = max(most, len(pods))
    return most


def worst_case_pods(replicas: list[Replica], node: dict[str, float], limit: int = 20000) -> int:
    """Most pods the group needs over every sequence of single-replica scale-ups and
    scale-downs within the bounds, starting from the min replicas (empty pods kept)."""
    demands = {r.name: dict(r.demand) for r in replicas}
    bounds = {r.name: (r.min_replicas, r.max_replicas) for r in replicas}
    if any(not _room((), r.name, node, demands) for r in replicas):
        raise ValueError("a replica fits no pod of the group")
    start: list[Pod] = []
    for r in replicas:
        for _ in range(r.min_replicas):
            start = _place(start, r.name, node, demands)
    seen = {_state(start)}
    todo = [start]
    most = len(start)
    while todo and len(seen) < limit:
        pods = todo.pop()
        counts = {name: sum(p.count(name) for p in pods) for name in bounds}
        nexts: list[list[Pod]] = []
        for name, (low, high) in bounds.items():
            if counts[name] < high:
                nexts.append(_place(pods, name, node, demands))
            if counts[name] > low:
                for i, pod in enumerate(pods):
                    if name in pod:
                        rest = list(pod)
                        rest.remove(name)
                        nexts.append([*pods[:i], tuple(rest), *pods[i + 1 :]])
        for nxt in nexts:
            key = _state(nxt)
            if key not in seen:
                seen.add(key)
                most = max(most, len(nxt))
                todo.append(nxt)
    return most
