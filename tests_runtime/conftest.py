"""Fixtures of the torch-free runtime tests: the committed micro export.

These tests import only cdetr_runtime, numpy, OpenCV and the engines; they
run in an environment without torch, mmcv, mmengine or mmdet (CI:
tools/run_runtime_tests.sh). tools/make_runtime_fixture.py regenerates data/.
"""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / 'data'
ROOT = DATA.parents[1]
if importlib.util.find_spec('cdetr_runtime') is None:  # not installed
    sys.path.insert(0, str(ROOT))  # a source checkout


@pytest.fixture(scope='session')
def expected():
    """tools/make_runtime_fixture.py's references (mmcv resize, PyTorch)."""
    return json.loads((DATA / 'expected.json').read_text())


@pytest.fixture(scope='session')
def model_path():
    return DATA / 'micro.onnx'
