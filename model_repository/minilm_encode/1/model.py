"""Step 2 of minilm_pipeline: INPUT_IDS, ATTENTION_MASK -> TOKEN_EMBEDDINGS [batch, L, 384].

All requests of one execute() run in one forward pass. Requests normally share L
(Triton batches only equal shapes); if they do not, the shorter ones are padded
(masked out) and their outputs cut back to their own L. Uses the same encoder code as
`minilm` (model_repository/minilm/1/minilm_bert.py).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "minilm" / "1"))

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from minilm_bert import Bert
from minilm_text import model_dir


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("num_threads", {}).get("string_value", "1")
        torch.set_num_threads(max(1, int(threads)))
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable once per process
            pass
        self._bert = Bert(model_dir())

    def execute(self, requests):
        ids = []
        masks = []
        for request in requests:
            ids.append(pb_utils.get_input_tensor_by_name(request, "INPUT_IDS").as_numpy())
            masks.append(pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy())
        bad = [i for i, (a, m) in enumerate(zip(ids, masks)) if a.shape != m.shape]
        length = max(a.shape[1] for a in ids)
        all_ids = np.zeros((sum(a.shape[0] for a in ids), length), dtype=np.int64)
        all_mask = np.zeros_like(all_ids)
        row = 0
        for idx, (a, m) in enumerate(zip(ids, masks)):
            if idx not in bad:
                all_ids[row : row + a.shape[0], : a.shape[1]] = a
                all_mask[row : row + a.shape[0], : a.shape[1]] = m
            row += a.shape[0]
        hidden = self._bert(torch.from_numpy(all_ids), torch.from_numpy(all_mask)).numpy()
        responses = []
        row = 0
        for idx, (a, m) in enumerate(zip(ids, masks)):
            if idx in bad:
                message = f"INPUT_IDS {list(a.shape)} and ATTENTION_MASK {list(m.shape)} differ"
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                    )
                )
            else:
                out = np.ascontiguousarray(hidden[row : row + a.shape[0], : a.shape[1]])
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[pb_utils.Tensor("TOKEN_EMBEDDINGS", out)]
                    )
                )
            row += a.shape[0]
        return responses
