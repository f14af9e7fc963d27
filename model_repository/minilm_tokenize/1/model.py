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
from minilm_text import gather_texts, load_tokenizer, model_dir, tokenize


class TritonPythonModel:
    def initialize(self, args):
        self._tokenizer = load_tokenizer(model_dir())

    def execute(self, requests):
        responses, texts, spans = gather_texts(requests, pb_utils)
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
