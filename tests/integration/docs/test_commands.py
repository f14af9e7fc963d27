"""The cheap commands the manual shows (no cluster, GPU or network) run as pasted, and
where it shows their output, that output is what they print."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHEAP = ("python -m app.validate", "python -m app.kuberay check", "python -m app.config_reference")


def shell_commands(page: Path) -> list[str]:
    """Commands of a page's bash blocks: continuations joined, comments and prompts off."""
    commands: list[str] = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", page.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


CHEAP_COMMANDS = sorted(
    {
        cmd.split(" #", 1)[0].strip()
        for page in PAGES
        for cmd in shell_commands(page)
        if cmd.startswith(CHEAP)
    }
)


def test_the_manual_shows_cheap_commands() -> None:
    assert any(c.startswith("python -m app.validate") for c in CHEAP_COMMANDS)
    assert any(c.startswith("python -m app.kuberay check") for c in CHEAP_COMMANDS)


@pytest.mark.parametrize("command", CHEAP_COMMANDS)
def test_cheap_commands_run_as_pasted(command: str) -> None:
    argv = [sys.executable, *shlex.split(command)[1:]]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    # app.validate exits 1 for a config that does not fit (a documented example).
    assert done.returncode in (0, 1), f"{command}: {done.returncode}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def transcripts() -> list[tuple[str, str, list[str], int]]:
    """Blocks that show a cheap command after ``$ `` with its output and exit status."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```\n(\$ python -m app\..*?)```", page.read_text(), re.S):
            first, *rest = block.rstrip("\n").splitlines()
            status = [line for line in rest if line.startswith("exit status: ")]
            output = [line for line in rest if not line.startswith("exit status: ")]
            code = int(status[0].split(": ")[1]) if status else 0
            found.append((page.name, first.removeprefix("$ "), output, code))
    return found


@pytest.mark.parametrize("page,command,output,code", transcripts())
def test_shown_output_is_what_the_command_prints(
    page: str, command: str, output: list[str], code: int
) -> None:
    argv = [sys.executable, *shlex.split(command)[1:]]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, f"{page}: {command}\n{done.stderr[-2000:]}"
    printed = (done.stdout + done.stderr).splitlines()
    assert [line.rstrip() for line in printed] == [line.rstrip() for line in output], page
