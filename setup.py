"""Builds the engine's compiled hot path (``app.triton._shim``) with ``pip install``."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "app.triton._shim",
            sources=["app/triton/_shim.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            libraries=["dl", "pthread"],
        )
    ]
)
