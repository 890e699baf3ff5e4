"""Shim so setuptools builds the CFFI extension; all metadata is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["build_kernels.py:ffibuilder"])
