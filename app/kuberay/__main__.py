"""``python -m app.kuberay render [--check]``, ``check [DIR]`` and ``import-crd CRD OUT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.kuberay.checks import report
from app.kuberay.manifests import KUBERAY_DIR
from app.kuberay.render import PATCH_PATH, PROD_CONFIG, render_patch
from app.kuberay.schema import write_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.kuberay")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write kuberay/base/serve-config.patch.yaml")
    render.add_argument("--serve-config", type=Path, default=PROD_CONFIG)
    render.add_argument("--out", type=Path, default=PATCH_PATH)
    render.add_argument(
        "--check", action="store_true", help="only say whether the file is up to date"
    )
    check = commands.add_parser(
        "check", help="check a kustomization against the operator's rules; print upgrade cost"
    )
    check.add_argument("directory", type=Path, nargs="?", default=KUBERAY_DIR)
    imported = commands.add_parser(
        "import-crd", help="store a KubeRay CRD's schema (tests/schemas/*.json.gz)"
    )
    imported.add_argument("crd", type=Path)
    imported.add_argument("out", type=Path)
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
    if args.command == "import-crd":
        write_schema(args.crd, args.out)
        print(f"wrote {args.out}")
        return 0
    result = report(args.directory)
    for note in result.notes:
        print(note)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    if result.problems:
        return 1
    print(f"{args.directory}: no problems")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
