"""Mixed traffic for the soak test, each request with the exact answer it must get.

A request whose answer is wrong (status, body, token order, payload) is *corrupted*;
one that gets no answer (connection error, timeout) is *lost*. Bad requests must get
their 4xx, never a 5xx.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Check = Callable[[httpx.AsyncClient, random.Random], Awaitable[None]]


class Corrupted(AssertionError):
    """The service answered, but not what it must."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Corrupted(what)


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    corrupted: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def failed(self, kind: str, bucket: Counter[str], why: str) -> None:
        bucket[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {why}")


async def echo_infer(client: httpx.AsyncClient, rng: random.Random) -> None:
    n = rng.randint(1, 64)
    floats = [round(rng.uniform(-1e3, 1e3), 3) for _ in range(n)]
    ints = [rng.randint(-(2**31), 2**31 - 1) for _ in range(n)]
    words = [f"w{rng.randrange(10**6)}-é" for _ in range(rng.randint(1, 4))]
    body = {
        "id": f"soak-{rng.randrange(10**9)}",
        "inputs": [
            {"name": "INPUT_FP32", "shape": [1, n], "datatype": "FP32", "data": floats},
            {"name": "INPUT_INT32", "shape": [1, n], "datatype": "INT32", "data": ints},
            {"name": "INPUT_BYTES", "shape": [1, len(words)], "datatype": "BYTES", "data": words},
        ],
    }
    response = await client.post("/v2/models/echo/infer", json=body)
    expect(response.status_code == 200, f"{response.status_code} {response.text[:200]}")
    answer = response.json()
    expect(answer["id"] == body["id"], "id")
    outputs = {o["name"]: o for o in answer["outputs"]}
    expect(outputs["OUTPUT_INT32"]["data"] == ints, "INT32 payload")
    expect(outputs["OUTPUT_BYTES"]["data"] == words, "BYTES payload")
    got = outputs["OUTPUT_FP32"]["data"]
    expect(
        len(got) == n
        and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(got, floats, strict=True)),
        "FP32 payload",
    )


async def streamer_tokens(client: httpx.AsyncClient, rng: random.Random) -> None:
    count = rng.randint(1, 24)
    body = {"COUNT": count, "DELAY_MS": rng.choice([0, 0, 5, 20])}
    indexes: list[int] = []
    async with client.stream("POST", "/v2/models/streamer/generate_stream", json=body) as r:
        expect(r.status_code == 200, f"status {r.status_code}")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                expect("error" not in event, f"error event {event}")
                expect(event["TEXT"] == f"token-{event['INDEX']}", f"token text {event}")
                indexes.append(event["INDEX"])
    expect(indexes == list(range(count)), f"tokens out of order or missing: {indexes}")


async def chat(client: httpx.AsyncClient, rng: random.Random) -> None:
    max_tokens = rng.randint(1, 12)
    body: dict[str, Any] = {
        "model": "tiny-llm",
        "messages": [{"role": "user", "content": f"Say something {rng.randrange(1000)}"}],
        "max_tokens": max_tokens,
        "seed": rng.randrange(1000),
    }
    if rng.random() < 0.5:
        response = await client.post("/v1/chat/completions", json=body)
        expect(response.status_code == 200, f"{response.status_code} {response.text[:200]}")
        answer = response.json()
        choice = answer["choices"][0]
        expect(answer["object"] == "chat.completion", "object")
        expect(choice["message"]["role"] == "assistant", "role")
        tokens = answer["usage"]["completion_tokens"]
        content = choice["message"]["content"]
        what = f"seed {body['seed']}, usage {answer['usage']}, choice {choice}"
        expect(0 <= tokens <= max_tokens, what)
        expect(choice["finish_reason"] in ("stop", "length"), what)
        # The random-weight model ends some (prompt, seed) pairs at once with its
        # end-of-sequence token, deterministically: nothing generated, "stop".
        expect(tokens > 0 or (content == "" and choice["finish_reason"] == "stop"), what)
        return
    body["stream"] = True
    events: list[Any] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        expect(r.status_code == 200, f"status {r.status_code}")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    expect(bool(events) and events[-1] == "[DONE]", "stream does not end with [DONE]")
    chunks = events[:-1]
    expect(all(c.get("object") == "chat.completion.chunk" for c in chunks), f"{chunks[:2]}")
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    expect(
        reasons[-1] in ("stop", "length") and all(x is None for x in reasons[:-1]),
        f"finish reasons {reasons}",
    )


_EMBEDDINGS: dict[str, list[float]] = {}


async def embeddings(client: httpx.AsyncClient, rng: random.Random) -> None:
    texts = [
        rng.choice(["cat", "kitten", "car", "a long sentence about soaking"]) for _ in range(3)
    ]
    response = await client.post("/v1/embeddings", json={"model": "minilm", "input": texts})
    expect(response.status_code == 200, f"{response.status_code} {response.text[:200]}")
    data = response.json()["data"]
    expect([d["index"] for d in data] == [0, 1, 2], "indexes")
    for text, item in zip(texts, data, strict=True):
        vector = item["embedding"]
        expect(len(vector) == 384 and all(math.isfinite(v) for v in vector), "vector")
        first = _EMBEDDINGS.setdefault(text, vector)
        expect(
            all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(first, vector, strict=True)),
            f"embedding of {text!r} changed",
        )


_BAD: list[tuple[str, str, Any, int]] = [
    ("POST", "/v2/models/echo/infer", b"{not json", 400),
    (
        "POST",
        "/v2/models/echo/infer",
        {"inputs": [{"name": "INPUT_FP32", "shape": [2], "datatype": "FP32", "data": [1.0]}]},
        400,
    ),
    (
        "POST",
        "/v2/models/echo/infer",
        {"inputs": [{"name": "NOPE", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]},
        400,
    ),
    ("POST", "/v2/models/no-such-model/infer", {"inputs": []}, 404),
    ("GET", "/v2/models/echo/versions/x", None, 400),
    ("POST", "/v2/models/streamer/generate_stream", {"COUNT": "many"}, 400),
    ("POST", "/v1/chat/completions", {"model": "tiny-llm", "messages": [], "logprobs": True}, 400),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]},
        404,
    ),
    ("POST", "/v1/embeddings", {"model": "minilm", "input": ["x"], "bogus": 1}, 400),
    ("DELETE", "/v2/models/echo", None, 405),
]


async def bad_request(client: httpx.AsyncClient, rng: random.Random) -> None:
    method, path, body, status = rng.choice(_BAD)
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    response = await client.request(method, path, **kwargs)
    expect(
        response.status_code == status,
        f"{method} {path}: {response.status_code} (want {status}) {response.text[:200]}",
    )
    expect("error" in response.json(), f"{method} {path}: no error body")


async def load_cycle(client: httpx.AsyncClient, rng: random.Random) -> None:
    """Unload ``versioned``, see it unready, load it, see both versions answer."""
    response = await client.post("/v2/repository/models/versioned/unload")
    expect(response.status_code == 200, f"unload {response.status_code} {response.text[:200]}")
    ready = await client.get("/v2/models/versioned/ready")
    expect(ready.status_code == 503, f"ready after unload: {ready.status_code}")
    response = await client.post("/v2/repository/models/versioned/load")
    expect(response.status_code == 200, f"load {response.status_code} {response.text[:200]}")
    x = [rng.uniform(-10, 10) for _ in range(3)]
    for version in (1, 2):
        body = {"inputs": [{"name": "INPUT0", "shape": [3], "datatype": "FP32", "data": x}]}
        answer = await client.post(f"/v2/models/versioned/versions/{version}/infer", json=body)
        expect(answer.status_code == 200, f"v{version}: {answer.status_code} {answer.text[:200]}")
        got = answer.json()["outputs"][0]["data"]
        expect(
            len(got) == 3
            and all(
                math.isclose(g, v * version, rel_tol=1e-5) for g, v in zip(got, x, strict=True)
            ),
            f"v{version} payload",
        )


# Weights of the mix for the request workers; load cycles run on their own worker.
MIX: list[tuple[str, Check, int]] = [
    ("echo_infer", echo_infer, 40),
    ("streamer_tokens", streamer_tokens, 20),
    ("chat", chat, 10),
    ("embeddings", embeddings, 10),
    ("bad_request", bad_request, 20),
]
