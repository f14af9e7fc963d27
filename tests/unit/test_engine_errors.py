"""Engine errors: one class per Triton error code, pickled with their class and text
(they cross Ray actor boundaries)."""

from __future__ import annotations

import pickle

import pytest

from app.triton import errors
from app.triton.errors import TritonError, error_from_code

CLASSES = [
    errors.UnknownError,
    errors.InternalError,
    errors.NotFoundError,
    errors.InvalidArgumentError,
    errors.UnavailableError,
    errors.UnsupportedError,
    errors.AlreadyExistsError,
    errors.CancelledError,
    errors.TritonNotFoundError,
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_errors_pickle_with_their_class(cls: type[TritonError]) -> None:
    err = cls("model 'x' is not found")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and back.message == err.message == str(back)


@pytest.mark.parametrize("cls", CLASSES[:-1], ids=lambda cls: cls.__name__)
def test_each_code_builds_its_class(cls: type[TritonError]) -> None:
    assert type(error_from_code(cls.code, "m")) is cls


def test_an_unknown_code_builds_unknown_error() -> None:
    err = error_from_code(999, "odd")
    assert type(err) is errors.UnknownError and err.message == "odd"
