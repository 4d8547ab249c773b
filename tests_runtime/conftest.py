"""Fixtures of the torch-free runtime tests: the committed micro export.

These tests import only cdetr_runtime, numpy, OpenCV and the engines; they
run in an environment without torch, mmcv, mmengine or mmdet (CI:
tools/run_runtime_tests.sh). tools/make_runtime_fixture.py regenerates data/.
"""
import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / 'data'


@pytest.fixture(scope='session')
def expected():
    """tools/make_runtime_fixture.py's references (mmcv resize, PyTorch)."""
    return json.loads((DATA / 'expected.json').read_text())


@pytest.fixture(scope='session')
def model_path():
    return DATA / 'micro.onnx'
