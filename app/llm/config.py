"""How a model is exposed on the OpenAI-compatible API (``openai:`` of a deployment)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OpenAIModelConfig"]


class OpenAIModelConfig(BaseModel):
    """One model on ``/v1``: a text generator (vLLM-style tensors) or an embedder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["generate", "embed"] = Field(
        description="'generate': /v1/completions and /v1/chat/completions; 'embed': /v1/embeddings."
    )
    tokenizer: str | None = Field(
        default=None,
        description="Tokenizer directory or Hugging Face id (read from the cache, never "
        "downloaded) for chat templates and token counts. Default: the 'model' of the "
        "model's <version>/model.json (the vLLM backend's file), relative to that directory.",
    )
    chat_template: str | None = Field(
        default=None, description="A Jinja chat template replacing the tokenizer's own."
    )
    embedding_input: str = Field(default="TEXT", description="Embedder's BYTES input.")
    embedding_output: str = Field(default="EMBEDDING", description="Embedder's FP32 output.")
    token_count_output: str | None = Field(
        default="TOKEN_COUNT", description="Embedder's per-text token count output, if any."
    )
