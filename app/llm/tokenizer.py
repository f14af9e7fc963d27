"""Tokenizers for chat templates and token counts, found without any download.

A generator's tokenizer is named by ``OpenAIModelConfig.tokenizer`` or, as Triton's
vLLM backend does, by the ``model`` of ``<model>/<version>/model.json``: a local
directory (relative to the version directory) or a Hugging Face id already in the
cache (``HF_HOME``). Loading runs off the event loop; it takes seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from app.errors import BadRequest, Unavailable

__all__ = ["ChatTokenizer", "tokenizer_source"]


def tokenizer_source(repository: str, model: str, configured: str | None) -> str:
    """Where the tokenizer of ``model`` comes from (a path or a hub id)."""
    if configured:
        return configured
    model_dir = Path(repository) / model
    versions = sorted(
        (p for p in model_dir.glob("*") if p.name.isdigit() and (p / "model.json").is_file()),
        key=lambda p: int(p.name),
    )
    if not versions:
        raise Unavailable(
            f"model '{model}' has no tokenizer: set openai.{model}.tokenizer in the "
            "deployment, or give the model a <version>/model.json naming its 'model'"
        )
    engine_args = json.loads((versions[-1] / "model.json").read_text())
    source = str(engine_args.get("model", ""))
    if not source:
        raise Unavailable(f"model '{model}': {versions[-1] / 'model.json'} names no 'model'")
    local = versions[-1] / source
    return str(local) if local.is_dir() else source


class ChatTokenizer:
    """A Hugging Face tokenizer used for prompts and counting, never for generation."""

    def __init__(self, source: str, chat_template: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        try:
            self._tokenizer: Any = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception as exc:
            raise Unavailable(
                f"tokenizer {source!r} could not be loaded from disk or the cache "
                f"({type(exc).__name__}: {exc})"
            ) from None
        self.source = source
        self.chat_template = chat_template

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The prompt the model was trained on for these messages (its chat template)."""
        template = self.chat_template or getattr(self._tokenizer, "chat_template", None)
        if not template:
            raise BadRequest(
                f"this model has no chat template (tokenizer {self.source!r}); use /v1/completions",
                param="messages",
            )
        try:
            prompt = self._tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # template errors, e.g. a role the template refuses
            raise BadRequest(
                f"messages: the chat template refused them: {exc}", param="messages"
            ) from None
        return str(prompt)

    def count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
