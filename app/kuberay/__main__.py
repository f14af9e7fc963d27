"""``python -m app.kuberay render [--check]`` and ``python -m app.kuberay check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.kuberay.checks import check_manifests
from app.kuberay.render import PATCH_PATH, PROD_CONFIG, render_patch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.kuberay")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write kuberay/serve-config.patch.yaml")
    render.add_argument("--serve-config", type=Path, default=PROD_CONFIG)
    render.add_argument("--out", type=Path, default=PATCH_PATH)
    render.add_argument(
        "--check", action="store_true", help="only say whether the file is up to date"
    )
    commands.add_parser("check", help="check kuberay/ against the operator's rules")
    args = parser.parse_args(argv)

    if args.command == "render":
        text = render_patch(args.serve_config)
        current = args.out.read_text() if args.out.exists() else None
        if args.check:
            if current != text:
                print(f"{args.out} is stale: run `python -m app.kuberay render`", file=sys.stderr)
                return 1
            print(f"{args.out} is up to date")
            return 0
        args.out.write_text(text)
        print(f"wrote {args.out}")
        return 0
    problems = check_manifests()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print("kuberay/: no problems")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
