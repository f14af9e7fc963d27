"""The OpenAI API of one model deployment: completions, chat completions, embeddings.

Runs inside the model replica, next to Triton and the model's files (the tokenizer
and its chat template live there). Bodies arrive already validated by the router.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import BadRequest, NotFound, ServingError, Unavailable, from_triton, openai_body
from app.llm.config import OpenAIModelConfig
from app.llm.generation import Delta, GenerationParams, ModelInputs, build_request, generate_many
from app.llm.tokenizer import ChatTokenizer, tokenizer_source
from app.protocol.openai import (
    SSE_DONE,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    SamplingFields,
    completion_id,
    now,
    sse_data,
)
from app.triton import InferenceRequest, Server, TritonError
from app.triton.inference import infer_once

__all__ = ["OpenAIService"]


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    output_tokens: int | None = None


class OpenAIService:
    """``models`` maps each model of the deployment exposed on /v1 to its settings."""

    def __init__(
        self, server: Server, repository: str, models: Mapping[str, OpenAIModelConfig]
    ) -> None:
        self.server = server
        self.repository = repository
        self.models = dict(models)
        self._tokenizers: dict[str, ChatTokenizer] = {}
        self._tokenizer_lock = asyncio.Lock()

    # ---- completions ----

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        req = CompletionRequest.model_validate(body)
        prompts = req.prompts()
        choices, prompt_tokens = await self._collect(req, prompts)
        texts = [
            (prompts[i // req.n] if req.echo else "") + "".join(c.text)
            for i, c in enumerate(choices)
        ]
        return {
            "id": completion_id("cmpl"),
            "object": "text_completion",
            "created": now(),
            "model": req.model,
            "choices": [
                {"index": i, "text": t, "logprobs": None, "finish_reason": c.finish_reason}
                for i, (t, c) in enumerate(zip(texts, choices, strict=True))
            ],
            "usage": await self._usage(req.model, prompt_tokens, choices),
        }

    async def completion_stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        req = CompletionRequest.model_validate(body)
        prompts = req.prompts()
        head: dict[str, Any] = {"id": completion_id("cmpl"), "created": now()}
        head |= {"object": "text_completion", "model": req.model}

        def chunk(index: int, text: str, reason: str | None) -> bytes:
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
            return sse_data({**head, "choices": [choice]})

        deltas = await self._start(req, prompts)
        yield b""
        if req.echo:
            for i in range(len(prompts) * req.n):
                yield chunk(i, prompts[i // req.n], None)
        async for event in self._stream_events(req, prompts, deltas, head, chunk):
            yield event

    # ---- chat ----

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        req = ChatCompletionRequest.model_validate(body)
        prompt = (await self._tokenizer(req.model)).chat_prompt(req.chat())
        choices, prompt_tokens = await self._collect(req, [prompt])
        return {
            "id": completion_id("chatcmpl"),
            "object": "chat.completion",
            "created": now(),
            "model": req.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "".join(c.text)},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ],
            "usage": await self._usage(req.model, prompt_tokens, choices),
        }

    async def chat_stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        req = ChatCompletionRequest.model_validate(body)
        prompt = (await self._tokenizer(req.model)).chat_prompt(req.chat())
        head: dict[str, Any] = {"id": completion_id("chatcmpl"), "created": now()}
        head |= {"object": "chat.completion.chunk", "model": req.model}

        def chunk(index: int, text: str, reason: str | None) -> bytes:
            delta = {"content": text} if text or reason is None else {}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            return sse_data({**head, "choices": [choice]})

        deltas = await self._start(req, [prompt])
        yield b""
        for i in range(req.n):
            role = {"index": i, "delta": {"role": "assistant", "content": ""}}
            yield sse_data({**head, "choices": [{**role, "logprobs": None, "finish_reason": None}]})
        async for event in self._stream_events(req, [prompt], deltas, head, chunk):
            yield event

    # ---- embeddings ----

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        req = EmbeddingRequest.model_validate(body)
        settings = self._settings(req.model, "embed")
        texts = req.texts()
        config = await asyncio.to_thread(lambda: self.server.model(req.model).config())
        batch = max(1, int(config.max_batch_size))
        parts = await asyncio.gather(
            *(
                self._embed(req.model, settings, config, texts[i : i + batch])
                for i in range(0, len(texts), batch)
            )
        )
        vectors = np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False)
        if req.dimensions is not None and req.dimensions != vectors.shape[1]:
            raise BadRequest(
                f"dimensions: this model returns {vectors.shape[1]} dimensions, not "
                f"{req.dimensions}",
                param="dimensions",
            )
        tokens = sum(p[1] for p in parts)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (
                    base64.b64encode(v.astype("<f4").tobytes()).decode()
                    if req.encoding_format == "base64"
                    else v.tolist()
                ),
            }
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _embed(
        self, model: str, settings: OpenAIModelConfig, config: Any, texts: list[str]
    ) -> tuple[np.ndarray[Any, Any], int]:
        values = np.array([t.encode() for t in texts], dtype=object)
        batched = int(config.max_batch_size) > 0
        request = InferenceRequest(
            model_name=model,
            inputs={settings.embedding_input: values.reshape(-1, 1) if batched else values},
        )
        try:
            response = await infer_once(self.server, request)
        except TritonError as exc:
            raise from_triton(exc) from exc
        vectors = response.outputs.get(settings.embedding_output)
        if vectors is None:
            raise Unavailable(f"model '{model}' returned no {settings.embedding_output} output")
        vectors = vectors.reshape(len(texts), -1)
        counts = response.outputs.get(settings.token_count_output or "")
        tokens = int(counts.sum()) if counts is not None else sum(len(t.split()) for t in texts)
        return vectors, tokens

    # ---- shared ----

    def _settings(self, model: str, task: str) -> OpenAIModelConfig:
        settings = self.models.get(model)
        if settings is None:
            raise NotFound(f"The model '{model}' does not exist", code="model_not_found")
        if settings.task != task:
            endpoint = "/v1/embeddings" if settings.task == "embed" else "/v1/completions"
            raise BadRequest(f"model '{model}' is served on {endpoint}", param="model")
        return settings

    async def _tokenizer(self, model: str) -> ChatTokenizer:
        settings = self._settings(model, "generate")
        found = self._tokenizers.get(model)
        if found is not None:
            return found
        async with self._tokenizer_lock:
            found = self._tokenizers.get(model)
            if found is None:
                source = tokenizer_source(self.repository, model, settings.tokenizer)
                found = await asyncio.to_thread(ChatTokenizer, source, settings.chat_template)
                self._tokenizers[model] = found
            return found

    async def _start(
        self, req: CompletionRequest | ChatCompletionRequest, prompts: list[str]
    ) -> AsyncGenerator[Delta, None]:
        """Submit every sequence and wait for the first delta, so that errors raised
        before generation starts (bad parameters, prompt too long) become a status."""
        self._settings(req.model, "generate")
        config = await asyncio.to_thread(lambda: self.server.model(req.model).config())
        shape = ModelInputs.from_config(config)
        limit = req.max_tokens if isinstance(req, CompletionRequest) else req.token_limit()
        requests = []
        for prompt in prompts:
            for j in range(req.n):
                params = GenerationParams(
                    max_tokens=limit,
                    temperature=req.temperature,
                    top_p=req.top_p,
                    seed=None if req.seed is None else req.seed + j,
                    stop=tuple(req.stop_list()),
                    presence_penalty=req.presence_penalty,
                    frequency_penalty=req.frequency_penalty,
                )
                requests.append(build_request(req.model, shape, prompt, params))
        deltas = generate_many(self.server, requests)
        try:
            first = await deltas.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await deltas.aclose()
            raise
        return _prepend(first, deltas)

    async def _collect(
        self, req: CompletionRequest | ChatCompletionRequest, prompts: list[str]
    ) -> tuple[list[_Choice], list[int | None]]:
        choices = [_Choice() for _ in range(len(prompts) * req.n)]
        prompt_tokens: list[int | None] = [None] * len(prompts)
        deltas = await self._start(req, prompts)
        try:
            async for delta in deltas:
                _apply(choices[delta.index], delta)
                if delta.prompt_tokens is not None:
                    prompt_tokens[delta.index // req.n] = delta.prompt_tokens
        finally:
            await deltas.aclose()
        for i, tokens in enumerate(prompt_tokens):
            if tokens is None:
                prompt_tokens[i] = (await self._tokenizer(req.model)).count(prompts[i])
        return choices, prompt_tokens

    async def _usage(
        self, model: str, prompt_tokens: list[int | None], choices: list[_Choice]
    ) -> dict[str, int]:
        prompt = sum(t or 0 for t in prompt_tokens)
        completion = 0
        for choice in choices:
            if choice.output_tokens is None:
                choice.output_tokens = (await self._tokenizer(model)).count("".join(choice.text))
            completion += choice.output_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _stream_events(
        self,
        req: SamplingFields,
        prompts: list[str],
        deltas: AsyncGenerator[Delta, None],
        head: dict[str, Any],
        chunk: Any,
    ) -> AsyncIterator[bytes]:
        choices = [_Choice() for _ in range(len(prompts) * req.n)]
        prompt_tokens: list[int | None] = [None] * len(prompts)
        try:
            async for delta in deltas:
                _apply(choices[delta.index], delta)
                if delta.prompt_tokens is not None:
                    prompt_tokens[delta.index // req.n] = delta.prompt_tokens
                if delta.text or delta.finish_reason is not None:
                    reason = (
                        choices[delta.index].finish_reason
                        if delta.finish_reason is not None
                        else None
                    )
                    yield chunk(delta.index, delta.text, reason)
            if req.include_usage():
                for i, tokens in enumerate(prompt_tokens):
                    if tokens is None:
                        prompt_tokens[i] = (await self._tokenizer(req.model)).count(prompts[i])
                usage = await self._usage(req.model, prompt_tokens, choices)
                yield sse_data({**head, "choices": [], "usage": usage})
        except ServingError as exc:
            yield sse_data(openai_body(exc))
        finally:
            await deltas.aclose()
        yield SSE_DONE


def _apply(choice: _Choice, delta: Delta) -> None:
    choice.text.append(delta.text)
    if delta.output_tokens is not None:
        choice.output_tokens = (choice.output_tokens or 0) + delta.output_tokens
    if delta.finish_reason is not None:
        choice.finish_reason = delta.finish_reason or "stop"


async def _prepend(
    first: Delta | None, rest: AsyncGenerator[Delta, None]
) -> AsyncGenerator[Delta, None]:
    try:
        if first is not None:
            yield first
        async for delta in rest:
            yield delta
    finally:
        await rest.aclose()
