"""The manual stays true: its generated reference is current and its links lead
somewhere (tests/integration/docs runs the commands it shows)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import config_reference

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_configuration_reference_is_current() -> None:
    page = config_reference.DOC_PATH.read_text()
    assert config_reference.splice(page, config_reference.render()) == page, (
        "docs/configuration.md is stale: run `python -m app.config_reference --write`"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_to_files(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
