"""Step 1 of llama3-8b-trtllm: tokenize text_input, turn sampling options into the
engine's inputs (see sampling.py): length, temperature, top-k/p, seed, stop words,
penalties, min length; end and pad ids from the tokenizer. Rows of one request are
padded to one length."""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling import parse_sampling, word_list  # noqa: E402


def _parameters(args):
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def _rows(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


class TritonPythonModel:
    def initialize(self, args):
        params = _parameters(args)
        # Imported here: loading transformers takes seconds and belongs to model load.
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(
            params["tokenizer_dir"], local_files_only=True
        )
        self._end_id = int(self._tokenizer.eos_token_id)
        pad = self._tokenizer.pad_token_id
        self._pad_id = self._end_id if pad is None else int(pad)
        self._max_seq_len = int(params.get("max_seq_len", "8192"))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except ValueError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _one(self, request):
        texts = _rows(request, "TEXT_INPUT")
        max_tokens = _rows(request, "MAX_TOKENS")
        sampling = _rows(request, "SAMPLING_PARAMETERS")
        ids, options = [], []
        for i, text in enumerate(texts):
            try:
                prompt = text.decode("utf-8") if isinstance(text, bytes) else str(text)
            except UnicodeDecodeError as exc:
                raise ValueError(f"text_input[{i}]: not valid UTF-8 ({exc})") from None
            row = parse_sampling(
                None if sampling is None else sampling[i],
                None if max_tokens is None else int(max_tokens[i]),
            )
            tokens = self._tokenizer.encode(prompt)
            if len(tokens) + row["max_tokens"] > self._max_seq_len:
                raise ValueError(
                    f"text_input[{i}]: {len(tokens)} prompt tokens + max_tokens "
                    f"{row['max_tokens']} > {self._max_seq_len}"
                )
            ids.append(tokens)
            options.append(row)
        width = max(len(t) for t in ids)
        padded = np.full((len(ids), width), self._pad_id, dtype=np.int32)
        for i, tokens in enumerate(ids):
            padded[i, : len(tokens)] = tokens

        def column(key, dtype):
            return np.array([[o[key]] for o in options], dtype=dtype)

        def encode(word):
            return self._tokenizer.encode(word, add_special_tokens=False)

        # [rows, 2, width]: token ids, then end offsets padded with -1 (no more words).
        words = [word_list(encode, o["stop"]) for o in options]
        width = max(1, *(len(flat) for flat, _ in words))
        stop_words = np.zeros((len(words), 2, width), dtype=np.int32)
        stop_words[:, 1, :] = -1
        for i, (flat, offsets) in enumerate(words):
            stop_words[i, 0, : len(flat)] = flat
            stop_words[i, 1, : len(offsets)] = offsets

        n = len(ids)
        outputs = {
            "INPUT_IDS": padded,
            "INPUT_LENGTH": np.array([[len(t)] for t in ids], dtype=np.int32),
            "REQUEST_OUTPUT_LEN": column("max_tokens", np.int32),
            "END_ID": np.full((n, 1), self._end_id, dtype=np.int32),
            "PAD_ID": np.full((n, 1), self._pad_id, dtype=np.int32),
            "TEMPERATURE": column("temperature", np.float32),
            "TOP_K": column("top_k", np.int32),
            "TOP_P": column("top_p", np.float32),
            "STOP_WORDS_LIST": stop_words,
            "RANDOM_SEED": column("seed", np.uint64),
            "REPETITION_PENALTY": column("repetition_penalty", np.float32),
            "PRESENCE_PENALTY": column("presence_penalty", np.float32),
            "FREQUENCY_PENALTY": column("frequency_penalty", np.float32),
            "MIN_LENGTH": column("min_tokens", np.int32),
        }
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]
        )
