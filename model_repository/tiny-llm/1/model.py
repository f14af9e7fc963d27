"""Triton glue of the CPU stand-in LLM, speaking the vLLM backend's tensors.

Requests run on a bounded pool of threads (``max_num_seqs`` in model.json) so
several generate at once, as in a real engine; each stops computing as soon as
its client cancels.
"""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).parent))
from tiny_llm_engine import SamplingError, TinyLLM, parse_sampling  # noqa: E402

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_RETURNS = (
    "return_finish_reason",
    "return_cumulative_logprob",
    "return_num_input_tokens",
    "return_num_output_tokens",
)


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        engine_args = json.loads((version_dir / "model.json").read_text())
        weights = Path(engine_args["model"])
        if not weights.is_absolute():
            weights = version_dir / weights
        torch.set_num_threads(1)
        self.llm = TinyLLM(
            weights, int(engine_args.get("seed", 0)), int(engine_args.get("max_model_len", 2048))
        )
        self.pool = ThreadPoolExecutor(
            max_workers=int(engine_args.get("max_num_seqs", 8)), thread_name_prefix="tiny-llm"
        )
        self._lock = threading.Lock()
        self._running = 0

    def execute(self, requests):
        for request in requests:
            self.pool.submit(self._serve, request, request.get_response_sender())
        return None

    def _serve(self, request, sender):
        try:
            self._generate(request, sender)
        except (SamplingError, ValueError) as exc:
            _send_error(sender, str(exc), pb_utils.TritonError.INVALID_ARG)
        except Exception as exc:  # a bug here must not leave the client waiting
            _send_error(sender, f"{type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)

    def _generate(self, request, sender):
        prompt = _scalar(request, "text_input")
        if isinstance(prompt, bytes):
            try:
                prompt = prompt.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"text_input is not valid UTF-8: {exc}") from None
        stream = bool(_scalar(request, "stream", False))
        exclude = _scalar(request, "exclude_input_in_output", None)
        prepend = (not bool(exclude)) if exclude is not None else not stream
        if prepend and stream:
            raise ValueError("When streaming, `exclude_input_in_output` = False is not allowed.")
        raw = _scalar(request, "sampling_parameters", None)
        sampling = parse_sampling(raw if raw is not None else request.parameters())
        wants = {name: bool(_scalar(request, name, False)) for name in _RETURNS}
        prompt_ids = self.llm.prompt_tokens(prompt)

        text, tokens, last = "", 0, None
        for step in self.llm.generate(prompt_ids, sampling, sender.is_cancelled):
            last = step
            if stream:
                if step.text or step.finish_reason:
                    sender.send(
                        self._response(step.text, step.tokens + tokens, step, prompt_ids, wants),
                        flags=_FINAL if step.finish_reason else 0,
                    )
                    tokens = 0
                else:
                    tokens += step.tokens
            else:
                text += step.text
                tokens += step.tokens
        if last is None or last.finish_reason is None:  # cancelled
            sender.send(flags=_FINAL)
            return
        if not stream:
            full = (prompt + text) if prepend else text
            sender.send(self._response(full, tokens, last, prompt_ids, wants), flags=_FINAL)

    def _response(self, text, tokens, step, prompt_ids, wants):
        outputs = [pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))]
        if wants["return_finish_reason"]:
            reason = step.finish_reason or "None"
            outputs.append(
                pb_utils.Tensor("finish_reason", np.array([reason.encode()], dtype=np.object_))
            )
        if wants["return_cumulative_logprob"]:
            outputs.append(
                pb_utils.Tensor(
                    "cumulative_logprob", np.array([step.cumulative_logprob], dtype=np.float32)
                )
            )
        if wants["return_num_input_tokens"]:
            outputs.append(
                pb_utils.Tensor("num_input_tokens", np.array([len(prompt_ids)], dtype=np.uint32))
            )
        if wants["return_num_output_tokens"]:
            outputs.append(
                pb_utils.Tensor("num_output_tokens", np.array([tokens], dtype=np.uint32))
            )
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def finalize(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _scalar(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise ValueError(f"{name} must hold exactly one element, got {values.size}")
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def _send_error(sender, message, code):
    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=_FINAL)
