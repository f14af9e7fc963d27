"""Identity model: returns OUTPUT_<T> for every INPUT_<T> present in the request.

Used by the integration tests (dtype round-trips, batching) and as the latency
benchmark target, so the hot path is a tight loop with no per-call setup.
The request parameter ``delay_ms`` (int) holds the answer back that long while
polling for cancellation; tests use it for timeouts, cancellation and stopping
the server with requests in flight.
"""

import json
import time

import triton_python_backend_utils as pb_utils

_POLL_S = 0.002


def _cancelled():
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)
    )


def _bad_delay(exc):
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(
            f"parameter 'delay_ms' must be an integer: {exc}", pb_utils.TritonError.INVALID_ARG
        )
    )


class TritonPythonModel:
    def initialize(self, args):
        # INPUT_FP32 -> OUTPUT_FP32 etc., precomputed so execute() only looks names up.
        # BF16 has no NumPy dtype (as_numpy() raises), so it is passed through DLPack.
        self._out_name = {}
        self._dlpack = set()
        config = json.loads(args["model_config"])
        for inp in config["input"]:
            self._out_name[inp["name"]] = "OUTPUT" + inp["name"][len("INPUT") :]
            if inp["data_type"] == "TYPE_BF16":
                self._dlpack.add(inp["name"])

    def execute(self, requests):
        out_name = self._out_name
        dlpack = self._dlpack
        Tensor = pb_utils.Tensor
        InferenceResponse = pb_utils.InferenceResponse
        responses = []
        delays = None
        for idx, request in enumerate(requests):
            params = request.parameters()  # JSON text, "{}" when none were sent
            if "delay_ms" in params:  # cheap substring test keeps the common path fast
                value = json.loads(params).get("delay_ms")
                try:
                    delay_ms = 0 if value is None else int(value)
                except (TypeError, ValueError) as exc:
                    responses.append(_bad_delay(exc))
                    continue
                if delay_ms > 0:
                    if delays is None:
                        delays = {}
                    delays[idx] = delay_ms
            outputs = []
            for tensor in request.inputs():
                in_name = tensor.name()
                if in_name in dlpack:
                    outputs.append(Tensor.from_dlpack(out_name[in_name], tensor.to_dlpack()))
                else:
                    outputs.append(Tensor(out_name[in_name], tensor.as_numpy()))
            responses.append(InferenceResponse(output_tensors=outputs))
        if delays is None:
            return responses
        self._answer_when_due(requests, responses, delays)
        return None

    @staticmethod
    def _answer_when_due(requests, responses, delays):
        """Send each response through its request's sender when due (or cancelled).

        Per-request sending (allowed in non-decoupled mode when execute returns None)
        keeps a short delay from waiting on a long one batched with it.
        """
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        start = time.monotonic()
        pending = {}
        for idx, request in enumerate(requests):
            sender = request.get_response_sender()
            if idx in delays:
                pending[idx] = (sender, start + delays[idx] / 1000.0)
            else:
                sender.send(responses[idx], flags=final)
        while pending:
            now = time.monotonic()
            for idx, (sender, due) in list(pending.items()):
                if requests[idx].is_cancelled():
                    sender.send(_cancelled(), flags=final)
                elif now >= due:
                    sender.send(responses[idx], flags=final)
                else:
                    continue
                del pending[idx]
            if pending:
                time.sleep(_POLL_S)
