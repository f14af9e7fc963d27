"""Triton's classification extension (advertised by /v2): top-k of an output as text."""

from __future__ import annotations

import numpy as np
import tritonclient.http as triton_http


def test_class_count_returns_top_entries(http_host: str) -> None:
    client = triton_http.InferenceServerClient(http_host)
    x = np.array([[1.0, 5.0, 3.0, 2.0]], dtype=np.float32)
    tensor = triton_http.InferInput("INPUT_FP32", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    for binary in (True, False):
        wanted = triton_http.InferRequestedOutput("OUTPUT_FP32", binary_data=binary, class_count=2)
        result = client.infer("echo", [tensor], outputs=[wanted])
        top = result.as_numpy("OUTPUT_FP32")
        assert top.shape == (1, 2)
        assert [v.decode() if isinstance(v, bytes) else v for v in top[0]] == [
            "5.000000:1",
            "3.000000:2",
        ]
