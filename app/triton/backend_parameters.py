"""Config parameters a Triton backend reads with no default: a model without one fails to load.

Found by reading the backends' sources, not by running them; each row cites the file.
``tests/unit/test_backend_parameters.py`` checks every model of the production config
against the rows that apply to the backend version our image pins.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PINNED_BACKEND_VERSIONS", "REQUIRED_PARAMETERS", "RequiredParameters", "required_for"]


@dataclass(frozen=True)
class RequiredParameters:
    backend: str
    since: tuple[int, ...]  # first backend version that requires them
    names: tuple[str, ...]
    source: str  # upstream file (and function) that reads them without a fallback
    note: str = ""


REQUIRED_PARAMETERS: tuple[RequiredParameters, ...] = (
    RequiredParameters(
        backend="tensorrtllm",
        since=(0, 0),
        names=("gpt_model_type", "gpt_model_path"),
        source="triton-inference-server/tensorrtllm_backend "
        "inflight_batcher_llm/src/model_instance_state.cc (ModelInstanceState constructor)",
    ),
    RequiredParameters(
        backend="tensorrtllm",
        since=(0, 19),
        names=("tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend"),
        source="triton-inference-server/tensorrtllm_backend v0.19.0 "
        "inflight_batcher_llm/src/model_instance_state.cc "
        "(getGuidedDecodingConfigFromParams); from v0.20 the same file lives in "
        "NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/",
        note="empty values turn guided decoding off",
    ),
)

# The backend versions of the images we deploy (kuberay/image/Dockerfile, NGC 25.10).
# TensorRT-LLM in the 25.10 trtllm image is >= 1.0 (NGC release notes; not yet checked
# on a running image): every row up to it applies.
PINNED_BACKEND_VERSIONS: dict[str, tuple[int, ...]] = {"tensorrtllm": (1, 0)}


def required_for(backend: str, version: tuple[int, ...] | None = None) -> set[str]:
    """Parameter names ``backend`` at ``version`` (default: the pinned one) needs."""
    at = version if version is not None else PINNED_BACKEND_VERSIONS.get(backend, (0,))
    return {
        name
        for row in REQUIRED_PARAMETERS
        if row.backend == backend and at >= row.since
        for name in row.names
    }
