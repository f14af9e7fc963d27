"""all-MiniLM-L6-v2 sentence embeddings on the instance's GPU (CPU for a KIND_CPU
instance), with minilm's own code: tokenize, BERT, mean pool, L2-normalize."""

import os

# Nothing here loads from a hub; these make sure no library tries to.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "minilm" / "1"))

import torch
import triton_python_backend_utils as pb_utils
from minilm_bert import Bert
from minilm_text import gather_texts, load_tokenizer, mean_pool, model_dir, tokenize


def _to_device(value, device):
    """Bert keeps its weights as tensors, tuples and lists of them."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_to_device(v, device) for v in value)
    return value


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        weights = config.get("parameters", {}).get("weights_dir", {}).get("string_value", "")
        directory = Path(weights) if weights else model_dir()
        if args["model_instance_kind"] == "GPU":
            self._device = torch.device("cuda", int(args["model_instance_device_id"]))
        else:
            self._device = torch.device("cpu")
        # Bert builds its attention mask with torch.zeros: make that land on the device.
        torch.set_default_device(self._device)
        self._tokenizer = load_tokenizer(directory)
        self._bert = Bert(directory)
        for name, value in vars(self._bert).items():
            setattr(self._bert, name, _to_device(value, self._device))

    def execute(self, requests):
        responses, texts, spans = gather_texts(requests, pb_utils)
        if not texts:
            return responses
        ids, mask = tokenize(self._tokenizer, texts)
        hidden = self._bert(
            torch.from_numpy(ids).to(self._device), torch.from_numpy(mask).to(self._device)
        )
        embeddings = mean_pool(hidden.cpu().numpy(), mask)
        counts = mask.sum(axis=1, dtype="int32").reshape(-1, 1)
        for idx, start, stop in spans:
            responses[idx] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("EMBEDDING", embeddings[start:stop]),
                    pb_utils.Tensor("TOKEN_COUNT", counts[start:stop]),
                ]
            )
        return responses
