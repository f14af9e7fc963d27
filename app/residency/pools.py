"""Globs in deployments' ``models`` resolved against the model repository.

Runs where the application is built (the repository is on that disk): the
replicas and the router receive the config with every glob replaced by the model
names it matched, so they never list the repository themselves.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from app.config import AppConfig, ModelDeploymentConfig, openai_tasks, validate_model_name
from app.residency.config import is_glob
from app.router.traffic_config import check_traffic

__all__ = ["has_globs", "repository_models", "resolve_pools"]


def has_globs(cfg: AppConfig) -> bool:
    return any(is_glob(m) for dep in cfg.deployments for m in dep.models)


def repository_models(root: Path) -> list[str]:
    """The repository's model directories (hidden ones and invalid names left out)."""
    names = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            names.append(validate_model_name(entry.name))
        except ValueError:
            continue
    return names


def resolve_pools(cfg: AppConfig) -> AppConfig:
    """``cfg`` with each glob replaced by the repository's models it matches and no
    other deployment names; a model two globs of different deployments match, a glob
    that matches nothing, or a pinned model the deployment does not serve is a
    ``ValueError`` naming the field. Needs a local ``model_repository``."""
    if not has_globs(cfg):
        return cfg
    root = Path(cfg.model_repository)
    if "://" in cfg.model_repository or not root.is_dir():
        raise ValueError(
            f"model_repository: globs in deployments' models need a local repository "
            f"directory; {cfg.model_repository!r} is not one on this node"
        )
    available = repository_models(root)
    named = {m for dep in cfg.deployments for m in dep.models if not is_glob(m)}
    claimed: dict[str, str] = {}  # model -> the glob field that matched it
    deployments: list[ModelDeploymentConfig] = []
    for i, dep in enumerate(cfg.deployments):
        resolved: list[str] = []
        for j, entry in enumerate(dep.models):
            if not is_glob(entry):
                if entry not in resolved:
                    resolved.append(entry)
                continue
            field = f"deployments[{i}].models[{j}]"
            matches = [m for m in available if fnmatch.fnmatchcase(m, entry) and m not in named]
            if not matches:
                raise ValueError(
                    f"{field}: glob {entry!r} matches no model of model_repository "
                    f"{cfg.model_repository!r} that another deployment does not name"
                )
            for model in matches:
                other = claimed.get(model)
                if other is not None and not other.startswith(f"deployments[{i}]."):
                    raise ValueError(
                        f"{field}: glob {entry!r} and {other} both match model {model!r}; "
                        "name it in one deployment or narrow a glob"
                    )
                claimed[model] = f"{field} ({entry!r})"
                if model not in resolved:
                    resolved.append(model)
        if dep.residency is not None:
            for k, name in enumerate(dep.residency.pinned):
                if name not in resolved:
                    raise ValueError(
                        f"deployments[{i}].residency.pinned[{k}]: {name!r} is not one of "
                        f"the models of deployment {dep.name!r}"
                    )
        deployments.append(dep.model_copy(update={"models": resolved}))
    resolved_cfg = cfg.model_copy(update={"deployments": deployments})
    # Traffic targets that matched a glob are models now, or not in the repository.
    check_traffic(resolved_cfg.traffic, openai_tasks(resolved_cfg))
    return resolved_cfg


def oversized_models(cfg: AppConfig) -> list[str]:
    """Models of a residency deployment whose declared size (``config.pbtxt``) cannot
    fit its budget even alone next to its pinned models: one line each, naming the
    field. ``cfg`` has its globs resolved; models without a declaration are not known
    until they load (refused then, at their first request)."""
    from app.residency.memory import declared_bytes
    from app.residency.policy import gib

    problems = []
    for i, dep in enumerate(cfg.deployments):
        if dep.residency is None:
            continue
        budget = dep.residency.budget_bytes
        pinned = {m: declared_bytes(cfg.model_repository, m) or 0 for m in dep.residency.pinned}
        for model in dep.models:
            size = declared_bytes(cfg.model_repository, model)
            if size is None:
                continue
            others = sum(s for m, s in pinned.items() if m != model)
            if size + others > budget:
                problems.append(
                    f"deployments[{i}].residency.memory_budget_gb: model {model!r} declares "
                    f"{gib(size)} but the budget is {gib(budget)}"
                    + (f" with {gib(others)} declared by pinned models" if others else "")
                )
    return problems
