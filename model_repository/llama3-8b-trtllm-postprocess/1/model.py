"""Step 3 of llama3-8b-trtllm: the engine's output ids (beam 0) -> text_output, the
UTF-8 bytes of the new tokens (detokenize.py says why bytes, not decoded text)."""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detokenize import TokenBytes  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        tokenizer_dir = config["parameters"]["tokenizer_dir"]["string_value"]
        # Imported here: loading transformers takes seconds and belongs to model load.
        from transformers import AutoTokenizer

        self._bytes = TokenBytes(AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))

    def execute(self, requests):
        responses = []
        for request in requests:
            # [batch, beams, tokens] and [batch, beams]; only beam 0 is used (width 1).
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            texts = [
                self._bytes.of(tokens[b, 0, : int(lengths[b, 0])].tolist())
                for b in range(tokens.shape[0])
            ]
            output = np.array(texts, dtype=object).reshape(-1, 1)
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TEXT_OUTPUT", output)])
            )
        return responses
