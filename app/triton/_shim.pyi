"""Type stubs of the compiled hot path (``_shim.c``)."""

from collections.abc import Callable
from typing import Any

class OutputBuffer:
    """Memory of one output tensor; exports the buffer protocol."""

    def __len__(self) -> int: ...

class CompletionQueue:
    def fileno(self) -> int: ...
    def drain(
        self,
    ) -> list[
        tuple[
            int,
            bool,
            tuple[int, str] | None,
            list[tuple[str, int, tuple[int, ...], OutputBuffer]],
            dict[str, str | int | float | bool],
        ]
    ]: ...

class Pending:
    def cancel(self) -> None: ...

def bind(dl_handle: int, error_factory: Callable[[int, str], BaseException]) -> None: ...
def submit(
    server: int,
    queue: CompletionQueue,
    key: int,
    model_name: str,
    model_version: int,
    request_id: str | None,
    inputs: list[tuple[str, int, tuple[int, ...], Any]],
    outputs: list[str] | None,
    parameters: list[tuple[str, str | int | float | bool]] | None,
    priority: int,
    timeout_us: int,
    correlation_id: int | str | None,
    flags: int,
) -> Pending: ...
def stats() -> dict[str, int]: ...
