"""``python -m app.validate CONFIG [--gpu-memory-gb G] [--gpus N]``: check a Serve config.

Validates the application's ``args`` as ``AppConfig`` (errors name the field), resolves
model pools' globs against a local repository and checks declared model sizes against
residency budgets, derives each engine's GPU memory share and prints the packing plan
(skipped when no deployment uses GPUs). Exit status: 0 when it fits, 1 when a share,
the packing or a pool model does not fit (the reason is printed), 2 when the config
is invalid. Needs neither Ray nor a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.config import AppConfig, check_paths
from app.placement.packing import PackingPlan, max_replicas, plan_packing
from app.placement.shares import PlacementError
from app.residency.pools import has_globs, oversized_models, resolve_pools

__all__ = ["main", "render_plan"]

IMPORT_PATH = "app.builders:build_app"


class _Invalid(Exception):
    """The config cannot be checked (exit status 2)."""


def _app_args(document: Any, app_name: str | None) -> tuple[str, dict[str, Any]]:
    """(label, args) of the application built by ``build_app`` in a Serve config, or
    the document itself when it is a bare ``args`` mapping."""
    if not isinstance(document, dict):
        raise _Invalid("the file is not a YAML mapping")
    if "applications" not in document:
        return "args", document
    apps = [
        a
        for a in document["applications"] or []
        if isinstance(a, dict)
        and a.get("import_path") == IMPORT_PATH
        and (app_name is None or a.get("name") == app_name)
    ]
    if len(apps) != 1:
        wanted = f" named {app_name!r}" if app_name else ""
        raise _Invalid(
            f"applications: expected one application{wanted} with import_path "
            f"{IMPORT_PATH!r}, found {len(apps)}"
        )
    args = apps[0].get("args")
    if not isinstance(args, dict):
        raise _Invalid(f"applications[{apps[0].get('name')!r}].args: must be a mapping")
    return f"application {apps[0].get('name')!r}", args


def _validation_errors(exc: ValidationError) -> str:
    return "\n".join(
        f"  {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors()
    )


def render_plan(cfg: AppConfig, plan: PackingPlan) -> str:
    """The plan as text: GPUs, their replicas, then each engine's share and arithmetic."""
    count = plan.gpu_count if plan.gpu_count is not None else "any number of"
    lines = [
        f"GPUs: {count} x {plan.gpu_memory_gb:g} GB; every deployment at its max replicas, "
        "first-fit decreasing",
        "",
        "GPU  group                 used  replicas",
    ]
    for gpu in plan.gpus:
        group = ",".join(gpu.group) if gpu.group else "-"
        slots = ", ".join(
            f"{s.deployment}#{s.replica} (GPUs {'+'.join(map(str, s.gpus))})"
            if len(s.gpus) > 1
            else f"{s.deployment}#{s.replica} {s.fraction:g}"
            for s in gpu.slots
        )
        lines.append(f"{gpu.index:>3}  {group:<20} {gpu.used:5.2f}  {slots}")
    lines += ["", "Deployments (memory per GPU of a replica):"]
    for dep in cfg.deployments:
        if dep.num_gpus <= 0:
            continue
        head = f"  {dep.name}: num_gpus {dep.num_gpus:g} x {max_replicas(dep)} replicas"
        share = plan.shares.get(dep.name)
        if share is None:
            lines.append(head + "; no gpu_memory (its memory is not checked)")
            continue
        setting = f"; {share.model}: {share.setting} = {share.value}" if share.setting else ""
        lines.append(f"{head}; engine {share.engine.value}{setting}")
        lines += [f"    {line}" for line in share.arithmetic().splitlines()]
    used = f"{plan.gpus_needed} of {plan.gpu_count}" if plan.gpu_count else f"{plan.gpus_needed}"
    lines += ["", f"{'fits' if plan.fits else 'DOES NOT FIT'}: {used} GPUs used"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.validate", description=__doc__)
    parser.add_argument("config", type=Path, help="Serve config (YAML) or a bare args mapping")
    parser.add_argument(
        "--gpu-memory-gb", type=float, help="memory of each GPU (default: args.gpus.memory_gb)"
    )
    parser.add_argument("--gpus", type=int, help="GPUs available (default: args.gpus.count)")
    parser.add_argument("--app", help="application name, if several use build_app")
    parser.add_argument(
        "--here",
        action="store_true",
        help="also run the build's filesystem checks on this node (the model repository "
        "and a directory per model): what `serve run` of a config file would only "
        "report in its logs",
    )
    options = parser.parse_args(argv)
    try:
        document = yaml.safe_load(options.config.read_text())
        label, args = _app_args(document, options.app)
        try:
            cfg = AppConfig.model_validate(args)
        except ValidationError as exc:
            raise _Invalid(f"invalid {label}:\n{_validation_errors(exc)}") from None
        if options.here:
            try:
                check_paths(cfg)
            except ValueError as exc:
                raise _Invalid(f"{label} cannot be built on this node: {exc}") from None
        if has_globs(cfg):
            try:
                cfg = resolve_pools(cfg)
            except ValueError as exc:
                raise _Invalid(f"invalid {label}: {exc}") from None
        oversized = oversized_models(cfg)
        if oversized:
            print(f"{options.config}: {label} is a valid AppConfig")
            print("DOES NOT FIT:\n" + "\n".join(f"  {p}" for p in oversized), file=sys.stderr)
            return 1
        if not any(d.num_gpus > 0 for d in cfg.deployments):
            print(f"{options.config}: {label} is a valid AppConfig (no GPUs used)")
            return 0
        memory = options.gpu_memory_gb or (cfg.gpus.memory_gb if cfg.gpus else None)
        if memory is None or memory <= 0:
            raise _Invalid("GPU memory unknown: pass --gpu-memory-gb or set args.gpus.memory_gb")
        count = options.gpus if options.gpus is not None else (cfg.gpus.count if cfg.gpus else None)
        if count is not None and count < 1:
            raise _Invalid("--gpus: must be >= 1")
    except (OSError, yaml.YAMLError, _Invalid) as exc:
        print(f"{options.config}: {exc}", file=sys.stderr)
        return 2
    print(f"{options.config}: {label} is a valid AppConfig")
    try:
        plan = plan_packing(cfg, memory, count)
    except PlacementError as exc:
        print(f"DOES NOT FIT: {exc}", file=sys.stderr)
        return 1
    print(render_plan(cfg, plan))
    try:
        plan.check()
    except PlacementError as exc:
        print(f"DOES NOT FIT: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
