"""One real in-process Triton for the engine tests (loading python models takes seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.triton import Options, Server

MODELS = ["echo", "streamer", "versioned", "ensemble_pipeline"]


@pytest.fixture(scope="package")
def server(model_repository: Path) -> Iterator[Server]:
    srv = Server(Options(model_repository=model_repository)).start()
    for name in MODELS:
        srv.load(name)
    yield srv
    srv.stop()
