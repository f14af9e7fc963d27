"""Step 3 of minilm_pipeline: TOKEN_EMBEDDINGS, ATTENTION_MASK -> EMBEDDING [batch, 384].

Mean over the unmasked tokens, L2-normalized; the same function `minilm` uses
(model_repository/minilm/1/minilm_text.py). Each request is pooled on its own: it is
cheap, and requests may differ in L.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "minilm" / "1"))

import triton_python_backend_utils as pb_utils
from minilm_text import mean_pool


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            hidden = pb_utils.get_input_tensor_by_name(request, "TOKEN_EMBEDDINGS").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy()
            if hidden.shape[:2] != mask.shape:
                message = (
                    f"TOKEN_EMBEDDINGS {list(hidden.shape)} does not match "
                    f"ATTENTION_MASK {list(mask.shape)}"
                )
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                    )
                )
                continue
            embedding = mean_pool(hidden, mask)
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", embedding)])
            )
        return responses
