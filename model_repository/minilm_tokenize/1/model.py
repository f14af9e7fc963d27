"""Step 1 of minilm_pipeline: TEXT [batch, 1] -> INPUT_IDS, ATTENTION_MASK [batch, L].

Every text of one execute() is padded to the same L (the longest), so the requests of
one batch reach minilm_encode with equal shapes and can be batched together there.
Uses the same tokenizer code as `minilm` (model_repository/minilm/1/minilm_text.py).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "minilm" / "1"))

import triton_python_backend_utils as pb_utils
from minilm_text import decode_texts, load_tokenizer, model_dir, tokenize


class TritonPythonModel:
    def initialize(self, args):
        self._tokenizer = load_tokenizer(model_dir())

    def execute(self, requests):
        responses = [None] * len(requests)
        texts = []
        spans = []  # (request index, start, stop) into texts
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
        if not texts:
            return responses
        ids, mask = tokenize(self._tokenizer, texts)
        counts = mask.sum(axis=1, dtype="int32").reshape(-1, 1)
        for idx, start, stop in spans:
            responses[idx] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("INPUT_IDS", ids[start:stop]),
                    pb_utils.Tensor("ATTENTION_MASK", mask[start:stop]),
                    pb_utils.Tensor("TOKEN_COUNT", counts[start:stop]),
                ]
            )
        return responses
