"""Metadata, repository and load documents, and ``parse_body``'s error messages."""

from __future__ import annotations

import base64
import json

import pytest

from app.errors import BadRequest
from app.protocol.kserve_v2 import (
    LoadRequest,
    ModelMetadata,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    ServerMetadata,
    UnloadRequest,
    parse_body,
)


def test_server_and_model_metadata_round_trip() -> None:
    server = {"name": "triton", "version": "2.60.0", "extensions": ["classification", "binary"]}
    assert ServerMetadata.model_validate(server).model_dump() == server
    model = {
        "name": "resnet",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "in", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 1000]}],
    }
    assert ModelMetadata.model_validate(model).model_dump() == model


def test_repository_index_entries_drop_absent_fields() -> None:
    entry = RepositoryIndexEntry(name="m", version="1", state="READY")
    assert entry.model_dump(exclude_none=True) == {"name": "m", "version": "1", "state": "READY"}


def test_repository_index_request() -> None:
    assert parse_body(RepositoryIndexRequest, b"", allow_empty=True).ready is False
    assert parse_body(RepositoryIndexRequest, b'{"ready": true}').ready is True
    with pytest.raises(BadRequest, match="'ready'"):
        parse_body(RepositoryIndexRequest, b'{"ready": "yes"}')
    with pytest.raises(BadRequest, match="'extra'"):
        parse_body(RepositoryIndexRequest, b'{"extra": 1}')


def test_load_request_with_config_and_files() -> None:
    payload = base64.b64encode(b"\x00onnx").decode()
    body = json.dumps(
        {"parameters": {"config": '{"backend": "onnxruntime"}', "file:1/model.onnx": payload}}
    ).encode()
    request = parse_body(LoadRequest, body)
    assert request.names_files()
    assert request.config == '{"backend": "onnxruntime"}'
    assert request.files() == {"file:1/model.onnx": b"\x00onnx"}


def test_load_request_without_files() -> None:
    request = parse_body(LoadRequest, b"", allow_empty=True)
    assert not request.names_files() and request.config is None and request.files() == {}
    assert not parse_body(LoadRequest, b'{"parameters": {"config": "{}"}}').names_files()


@pytest.mark.parametrize(
    ("parameters", "needle"),
    [
        ({"config": "not json"}, "'config' is not valid JSON"),
        ({"config": "[1]"}, "JSON object"),
        ({"config": 1}, "parameters.config"),
        ({"other": "x"}, "unknown key 'other'"),
        ({"file:": "YQ=="}, "relative path"),
        ({"file:/etc/passwd": "YQ=="}, "relative path"),
        ({"file:1/../../x": "YQ=="}, "relative path"),
        ({"file:1//x": "YQ=="}, "relative path"),
    ],
)
def test_bad_load_requests(parameters: dict[str, object], needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(LoadRequest, json.dumps({"parameters": parameters}).encode())
    assert needle in info.value.message
    assert "parameters" in info.value.message


def test_load_request_bad_base64_names_the_key() -> None:
    request = parse_body(LoadRequest, b'{"parameters": {"file:1/m.onnx": "!!not base64"}}')
    with pytest.raises(BadRequest, match=r"'file:1/m.onnx' is not valid base64") as info:
        request.files()
    assert info.value.param == "parameters.file:1/m.onnx"


def test_unload_request() -> None:
    assert parse_body(UnloadRequest, b"", allow_empty=True).parameters.unload_dependents is False
    body = b'{"parameters": {"unload_dependents": true}}'
    assert parse_body(UnloadRequest, body).parameters.unload_dependents is True
    with pytest.raises(BadRequest, match=r"parameters\.unload_dependents"):
        parse_body(UnloadRequest, b'{"parameters": {"unload_dependents": "y"}}')


def test_parse_body_rejects_non_objects_and_bad_json() -> None:
    with pytest.raises(BadRequest, match="JSON object"):
        parse_body(RepositoryIndexRequest, b"[]")
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_body(RepositoryIndexRequest, b"{")
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_body(RepositoryIndexRequest, b"")
