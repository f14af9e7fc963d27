"""Property tests: round trips through tritonclient, and no input crashes the decoder."""

from __future__ import annotations

import contextlib
import json
import posixpath
from pathlib import PurePosixPath
from typing import Any, Literal

import ml_dtypes
import numpy as np
import numpy.typing as npt
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.config import validate_model_name
from app.errors import ServingError
from app.protocol.kserve_v2 import (
    InputSpec,
    LoadRequest,
    decode_generate_request,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)
from app.replica.host import parse_version
from app.triton.tensors import DataType

LIMITS: dict[str, int] = {"max_elements": 4096, "max_bytes_element": 1024}
NUMERIC = [d for d in DataType if d not in (DataType.INVALID, DataType.BYTES)]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def numeric_arrays(draw: st.DrawFn) -> tuple[DataType, npt.NDArray[Any]]:
    datatype = draw(st.sampled_from(NUMERIC))
    shape = draw(shapes)
    if datatype is DataType.BF16:
        floats = hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32))
        return datatype, draw(floats).astype(ml_dtypes.bfloat16)
    widths: dict[DataType, Literal[16, 32, 64]] = {
        DataType.FP16: 16,
        DataType.FP32: 32,
        DataType.FP64: 64,
    }
    elements = None
    if datatype in widths:
        elements = st.floats(allow_nan=False, width=widths[datatype])
    return datatype, draw(hnp.arrays(datatype.numpy_dtype, shape, elements=elements))


bytes_arrays = shapes.flatmap(
    lambda shape: hnp.arrays(np.object_, shape, elements=st.binary(max_size=12))
)


@SETTINGS
@given(case=numeric_arrays(), binary=st.booleans())
def test_numeric_round_trip_through_tritonclient(
    case: tuple[DataType, npt.NDArray[Any]], binary: bool
) -> None:
    datatype, array = case
    binary = binary or datatype is DataType.BF16  # tritonclient sends BF16 only as binary
    tensor = httpclient.InferInput("x", list(array.shape), datatype.name)
    tensor.set_data_from_numpy(array, binary_data=binary)
    body, header = httpclient.InferenceServerClient.generate_request_body([tensor])
    (decoded,) = decode_infer_request(bytes(body), header, **LIMITS).inputs
    np.testing.assert_array_equal(decoded.to_numpy(), array)

    out, out_header = encode_infer_response(
        "m", 1, None, [("y", datatype, decoded.to_numpy())], binary_outputs=binary
    )
    result = httpclient.InferenceServerClient.parse_response_body(out, header_length=out_header)
    np.testing.assert_array_equal(result.as_numpy("y").astype(array.dtype), array)


@SETTINGS
@given(array=bytes_arrays)
def test_bytes_round_trip_through_tritonclient(array: npt.NDArray[Any]) -> None:
    tensor = httpclient.InferInput("s", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array, binary_data=True)
    body, header = httpclient.InferenceServerClient.generate_request_body([tensor])
    (decoded,) = decode_infer_request(bytes(body), header, **LIMITS).inputs
    assert decoded.shape == array.shape
    assert decoded.to_numpy().ravel().tolist() == array.ravel().tolist()

    out, out_header = encode_infer_response("m", 1, None, [("y", DataType.BYTES, array)])
    got = httpclient.InferenceServerClient.parse_response_body(out, header_length=out_header)
    values = [v if isinstance(v, bytes) else v.encode() for v in got.as_numpy("y").ravel()]
    assert values == array.ravel().tolist()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
datatypes = st.sampled_from([d.name for d in DataType] + ["X"])
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b"]),
        "shape": st.lists(st.integers(-2, 3) | st.sampled_from([2**40, 2**63]), max_size=3),
        "datatype": datatypes,
    },
    optional={
        "data": json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "x"]), st.integers(-1, 16) | json_values
        ),
    },
)
documents = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3)},
    optional={
        "id": json_values,
        "parameters": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=3)},
                optional={"parameters": st.dictionaries(st.text(max_size=12), json_values)},
            ),
            max_size=2,
        ),
    },
)


@SETTINGS
@given(doc=documents | json_values, tail=st.binary(max_size=40), cut=st.integers(-2, 400))
def test_decoder_only_raises_serving_errors(doc: Any, tail: bytes, cut: int) -> None:
    text = json.dumps(doc).encode()
    for header in (None, len(text), cut):
        with contextlib.suppress(ServingError):
            decode_infer_request(text + tail, header, **LIMITS)


@SETTINGS
@given(doc=st.dictionaries(st.sampled_from(["t", "n", "parameters", "id", "z"]), json_values))
def test_generate_decoder_only_raises_serving_errors(doc: dict[str, Any]) -> None:
    specs = [
        InputSpec("t", DataType.BYTES, (-1,)),
        InputSpec("n", DataType.INT8, (2, -1), optional=True),
    ]
    with contextlib.suppress(ServingError):
        decode_generate_request(json.dumps(doc).encode(), specs, 4, **LIMITS)


@SETTINGS
@given(
    array=bytes_arrays,
    other=numeric_arrays(),
    cut=st.integers(0, 400),
    flip=st.integers(0, 400),
    header_shift=st.integers(-8, 8),
)
def test_mutated_binary_requests_only_raise_serving_errors(
    array: npt.NDArray[Any],
    other: tuple[DataType, npt.NDArray[Any]],
    cut: int,
    flip: int,
    header_shift: int,
) -> None:
    datatype, numbers = other
    inputs = [httpclient.InferInput("s", list(array.shape), "BYTES")]
    inputs[0].set_data_from_numpy(array, binary_data=True)
    inputs.append(httpclient.InferInput("n", list(numbers.shape), datatype.name))
    inputs[1].set_data_from_numpy(numbers, binary_data=True)
    body, header = httpclient.InferenceServerClient.generate_request_body(inputs)
    raw = bytearray(body)
    if raw and flip < len(raw):
        raw[flip] ^= 0x41
    for candidate, length in (
        (bytes(raw), header),
        (bytes(body)[: max(header, cut)], header),
        (bytes(body), header + header_shift),
    ):
        with contextlib.suppress(ServingError):
            decode_infer_request(candidate, length, **LIMITS)


# ---- limits, and names that reach Triton or the filesystem ----

SMALL_LIMITS: dict[str, int] = {"max_elements": 6, "max_bytes_element": 4}


@SETTINGS
@given(
    array=hnp.arrays(
        np.object_,
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4),
        elements=st.binary(max_size=6),
    ),
    binary=st.booleans(),
)
def test_accepted_requests_respect_the_limits(array: npt.NDArray[Any], binary: bool) -> None:
    """Whatever is accepted is within max_elements and max_bytes_element; whatever is
    over them is refused with 400, never decoded."""
    if not binary:
        array = np.vectorize(lambda b: b.hex()[:6].encode(), otypes=[object])(array)
    tensor = httpclient.InferInput("s", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array, binary_data=binary)
    body, header = httpclient.InferenceServerClient.generate_request_body([tensor])
    over = array.size > SMALL_LIMITS["max_elements"] or any(
        len(v) > SMALL_LIMITS["max_bytes_element"] for v in array.ravel()
    )
    try:
        (decoded,) = decode_infer_request(bytes(body), header, **SMALL_LIMITS).inputs
    except ServingError as exc:
        assert over and exc.status_code == 400, exc
        return
    assert not over
    assert decoded.to_numpy().size <= SMALL_LIMITS["max_elements"]


@SETTINGS
@given(text=st.text(alphabet="0123456789+- x\t", max_size=8))
def test_header_length_is_an_integer_or_400(text: str) -> None:
    try:
        value = parse_header_length(text)
    except ServingError as exc:
        assert exc.status_code == 400
        return
    assert value == int(text.strip())


@SETTINGS
@given(text=st.text(alphabet="0123456789-+. a/%", max_size=20))
def test_version_is_a_non_negative_integer_or_400(text: str) -> None:
    try:
        version = parse_version(text)
    except ServingError as exc:
        assert exc.status_code == 400
        return
    assert version == (int(text) if text else -1)
    assert version >= -1 and (text == "" or text.isdigit())


@SETTINGS
@given(name=st.text(alphabet="ab./\\ \x00%~", min_size=0, max_size=12))
def test_model_names_stay_inside_the_repository(name: str) -> None:
    try:
        validate_model_name(name)
    except ValueError:
        return
    root = PurePosixPath("/repository")
    resolved = PurePosixPath(posixpath.normpath(root / name))
    assert resolved.parent == root and resolved.name == name


@SETTINGS
@given(path=st.text(alphabet="ab./\\\x00", min_size=0, max_size=12))
def test_file_parameters_stay_inside_the_model(path: str) -> None:
    try:
        LoadRequest.model_validate({"parameters": {f"file:{path}": "AA=="}})
    except ValueError:  # pydantic's ValidationError is a ValueError
        return
    normalized = posixpath.normpath(path)
    assert not posixpath.isabs(normalized)
    assert normalized != ".." and not normalized.startswith("../")
    assert "\x00" not in path and "\\" not in path
