"""The OpenAI API next to Triton: bodies the router validated, answered by
``app.llm.service.OpenAIService`` on the host's Triton."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from app.contract import OpenAICall
from app.errors import NotFound
from app.llm.service import OpenAIService
from app.replica.host import ReplicaHost
from app.replica.streaming import coalesce

__all__ = ["OpenAIAdapter"]


class OpenAIAdapter:
    """The OpenAI calls of ``app.contract.ReplicaAPI``."""

    def __init__(self, host: ReplicaHost) -> None:
        self.host = host
        self.service = OpenAIService(host.server, host.cfg.model_repository, host.deployment.openai)

    async def openai_call(self, call: OpenAICall) -> dict[str, Any]:
        self.host.owned(call.model, None)
        if call.endpoint == "completions":
            return await self.service.completion(call.body)
        if call.endpoint == "chat":
            return await self.service.chat(call.body)
        if call.endpoint == "embeddings":
            return await self.service.embeddings(call.body)
        raise NotFound(f"no OpenAI endpoint {call.endpoint!r}")

    async def openai_stream(self, call: OpenAICall) -> AsyncIterator[bytes]:
        """SSE events; the first item is ``b""`` once generation has started."""
        self.host.owned(call.model, None)
        events: AsyncGenerator[bytes, None]
        if call.endpoint == "completions":
            events = self.service.completion_stream(call.body)
        elif call.endpoint == "chat":
            events = self.service.chat_stream(call.body)
        else:
            raise NotFound(f"no streaming OpenAI endpoint {call.endpoint!r}")
        async for chunk in coalesce(events):
            yield chunk
