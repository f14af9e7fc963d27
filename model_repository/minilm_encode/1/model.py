"""Step 2 of minilm_pipeline: INPUT_IDS, ATTENTION_MASK -> TOKEN_EMBEDDINGS [batch, L, 384].

All requests of one execute() run in one forward pass. Requests normally share L
(Triton batches only equal shapes); if they do not, the shorter ones are padded
(masked out) and their outputs cut back to their own L. Uses the same encoder code as
`minilm` (model_repository/minilm/1/minilm_bert.py).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import contextlib
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
        with contextlib.suppress(RuntimeError):  # only settable once per process
            torch.set_num_interop_threads(1)
        self._bert = Bert(model_dir())

    def _check(self, ids, mask):
        """Why this request cannot run, or None."""
        if ids.shape != mask.shape:
            return f"INPUT_IDS {list(ids.shape)} and ATTENTION_MASK {list(mask.shape)} differ"
        if ids.shape[1] > self._bert.max_positions:
            return f"{ids.shape[1]} tokens > {self._bert.max_positions}"
        if ids.size and (ids.min() < 0 or ids.max() >= self._bert.vocab_size):
            return f"INPUT_IDS must be in [0, {self._bert.vocab_size})"
        return None

    def execute(self, requests):
        inputs = []
        errors = {}
        for idx, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy()
            problem = self._check(ids, mask)
            if problem is None:
                inputs.append((idx, ids, mask))
            else:
                errors[idx] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)
                )
        outputs = {}
        if inputs:
            # One forward pass; requests shorter than the longest are padded (masked out).
            length = max(ids.shape[1] for _, ids, _ in inputs)
            rows = sum(ids.shape[0] for _, ids, _ in inputs)
            all_ids = np.zeros((rows, length), dtype=np.int64)
            all_mask = np.zeros_like(all_ids)
            row = 0
            for _, ids, mask in inputs:
                all_ids[row : row + len(ids), : ids.shape[1]] = ids
                all_mask[row : row + len(ids), : ids.shape[1]] = mask
                row += len(ids)
            hidden = self._bert(torch.from_numpy(all_ids), torch.from_numpy(all_mask)).numpy()
            row = 0
            for idx, ids, _ in inputs:
                out = np.ascontiguousarray(hidden[row : row + len(ids), : ids.shape[1]])
                outputs[idx] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("TOKEN_EMBEDDINGS", out)]
                )
                row += len(ids)
        return [errors[i] if i in errors else outputs[i] for i in range(len(requests))]
