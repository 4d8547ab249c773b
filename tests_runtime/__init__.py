"""Torch-free tests of cdetr_runtime (a package, so its conftest does not
shadow tests/conftest.py when both folders are collected together)."""
