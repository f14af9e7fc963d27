"""The ServingError tree: statuses, engine mapping, bodies, pickling."""

from __future__ import annotations

import pickle

import pytest

from app import errors
from app.errors import (
    BadRequest,
    ClientClosedRequest,
    Conflict,
    Internal,
    NotFound,
    NotImplementedFeature,
    ServingError,
    TooManyRequests,
    Unavailable,
    from_triton,
    kserve_body,
    openai_body,
    to_serving_error,
)
from app.triton import errors as triton_errors

STATUSES = {
    "BadRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "NotFound": 404,
    "RequestTimeout": 408,
    "Conflict": 409,
    "PayloadTooLarge": 413,
    "TooManyRequests": 429,
    "ClientClosedRequest": 499,
    "Internal": 500,
    "NotImplementedFeature": 501,
    "Unavailable": 503,
}


@pytest.mark.parametrize(("name", "status"), STATUSES.items())
def test_status_codes(name: str, status: int) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, ServingError)
    err = cls("boom")
    assert err.status_code == status
    assert err.message == "boom" and str(err) == "boom"


@pytest.mark.parametrize("name", STATUSES)
def test_errors_pickle_with_their_attributes(name: str) -> None:
    err = getattr(errors, name)("msg", retry_after=2.5, param="inputs", code="c")
    restored = pickle.loads(pickle.dumps(err))
    assert type(restored) is type(err)
    assert (restored.message, restored.retry_after, restored.param, restored.code) == (
        "msg",
        2.5,
        "inputs",
        "c",
    )


@pytest.mark.parametrize(
    ("triton_cls", "expected", "status"),
    [
        (triton_errors.NotFoundError, NotFound, 404),
        (triton_errors.InvalidArgumentError, BadRequest, 400),
        (triton_errors.UnavailableError, Unavailable, 503),
        (triton_errors.UnsupportedError, NotImplementedFeature, 501),
        (triton_errors.AlreadyExistsError, Conflict, 409),
        (triton_errors.CancelledError, ClientClosedRequest, 499),
        (triton_errors.InternalError, Internal, 500),
        (triton_errors.UnknownError, Internal, 500),
        (triton_errors.TritonNotFoundError, Internal, 500),
        (triton_errors.TritonError, Internal, 500),
    ],
)
def test_from_triton(
    triton_cls: type[triton_errors.TritonError], expected: type[ServingError], status: int
) -> None:
    err = from_triton(triton_cls("engine says no"))
    assert type(err) is expected
    assert err.status_code == status
    assert err.message == "engine says no"


def test_from_triton_retry_after_only_for_unavailable() -> None:
    assert from_triton(triton_errors.UnavailableError("x"), retry_after=1).retry_after == 1
    assert from_triton(triton_errors.InternalError("x"), retry_after=1).retry_after is None


def test_dead_python_backend_stub_is_unavailable_not_internal() -> None:
    # The python backend's words for a request to a model whose stub died.
    for message in (
        "Stub process 'echo_0_0' is not healthy.",
        "Failed to process the request(s) for model 'echo_0_0', message: "
        "Stub process 'echo_0_0' is not healthy.",
    ):
        err = from_triton(triton_errors.InternalError(message), retry_after=1)
        assert type(err) is Unavailable and err.status_code == 503
        assert err.message == message and err.headers() == {"Retry-After": "1"}
    assert type(from_triton(triton_errors.InternalError("stub crashed"))) is Internal


def test_retry_after_header() -> None:
    assert Unavailable("busy", retry_after=1.2).headers() == {"Retry-After": "2"}
    assert Unavailable("busy").headers() == {}
    with pytest.raises(ValueError, match="retry_after"):
        Unavailable("x", retry_after=-1)


def test_to_serving_error() -> None:
    err = BadRequest("bad")
    assert to_serving_error(err) is err
    assert isinstance(to_serving_error(triton_errors.NotFoundError("m")), NotFound)
    wrapped = to_serving_error(KeyError("k"))
    assert isinstance(wrapped, Internal) and "KeyError" in wrapped.message


def test_kserve_body() -> None:
    assert kserve_body(NotFound("no model 'm'")) == {"error": "no model 'm'"}


@pytest.mark.parametrize(
    ("err", "type_", "code"),
    [
        (BadRequest("b", param="messages"), "invalid_request_error", None),
        (NotFound("n", code="model_not_found"), "not_found_error", "model_not_found"),
        (TooManyRequests("t"), "rate_limit_error", "rate_limit_exceeded"),
        (Internal("i"), "server_error", None),
        (Unavailable("u"), "server_error", "service_unavailable"),
        (errors.Unauthorized("a"), "authentication_error", "invalid_api_key"),
        (errors.Forbidden("f"), "permission_error", None),
    ],
)
def test_openai_body(err: ServingError, type_: str, code: str | None) -> None:
    body = openai_body(err)
    assert body == {
        "error": {"message": err.message, "type": type_, "param": err.param, "code": code}
    }
