"""What ``bench.engine`` measures (the model, its tensors, the paths, the concurrency,
the targets) and what a run holds: a cell per concurrency, a row per path, tensor and
busy mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.common.measure import Cell

MODEL = "echo"
INPUT = "INPUT_FP32"
OUTPUT = "OUTPUT_FP32"
CONCURRENCY = (1, 16, 64)
TENSORS: dict[str, tuple[int, ...]] = {"small": (1, 16), "4MiB": (1, 1 << 20)}
PATHS = ("in-process", "standalone gRPC", "standalone HTTP")

TARGET_RPS_RATIO = 1.5  # in-process rps@16 >= 1.5 x standalone gRPC
TARGET_P50_RATIO = 1.0  # in-process p50 <= standalone gRPC
TARGET_BUSY_COST = 0.20  # busy-thread p50 cost < 20 %


@dataclass
class EngineCell(Cell):
    """A cell of one path, tensor and busy mode, and the client style that measured it."""

    path: str
    tensor: str
    busy: bool
    client: str


@dataclass
class Row:
    """The table's row for (path, tensor, busy)."""

    path: str
    tensor: str
    busy: bool
    cells: dict[int, EngineCell] = field(default_factory=dict)

    @property
    def p50_ms(self) -> float:
        return self.cells[1].p50_ms

    @property
    def p99_ms(self) -> float:
        return self.cells[1].p99_ms

    def rps(self, concurrency: int) -> float:
        return self.cells[concurrency].rps
