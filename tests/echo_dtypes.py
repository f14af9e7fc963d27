"""The numeric datatypes of the ``echo`` model with their numpy types, written out by
hand (not derived from ``app.triton``) so tests check the engine's table against it."""

from __future__ import annotations

import ml_dtypes
import numpy as np

NUMERIC: list[tuple[str, type]] = [
    ("FP32", np.float32),
    ("FP16", np.float16),
    ("FP64", np.float64),
    ("BF16", ml_dtypes.bfloat16),
    ("INT8", np.int8),
    ("INT16", np.int16),
    ("INT32", np.int32),
    ("INT64", np.int64),
    ("UINT8", np.uint8),
    ("UINT16", np.uint16),
    ("UINT32", np.uint32),
    ("UINT64", np.uint64),
    ("BOOL", np.bool_),
]
