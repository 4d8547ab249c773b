"""Install this repository: two packages, two environments.

* ``pip install -e '.[train]'`` (what tools/setup_env.sh runs, with the
  tests, deploy and int8 extras): ``cdetr_mmdet``, the MMDetection plugin,
  with torch, mmengine, mmcv and mmdet. As with MMDetection itself, install
  torch and mmcv first: mmcv 2.1.0 has no registry wheel for recent torch,
  so it comes from a wheelhouse (``PIP_FIND_LINKS``) or is built from
  source, as tools/setup_env.sh does.
* ``pip install '.[runtime]'`` (or ``.[runtime-openvino]``): the torch-free
  ``cdetr_runtime`` only needs numpy, OpenCV and ONNX Runtime (OpenVINO);
  no torch, mmcv, mmengine or mmdet is installed (tools/run_runtime_tests.sh).

The base requirements are therefore the two packages' common ground
(numpy); ``import cdetr_mmdet`` without the ``train`` extra names it.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version():
    """Read ``__version__`` without importing the package (and torch)."""
    text = (HERE / 'cdetr_mmdet' / 'version.py').read_text()
    return re.search(r"^__version__ = '([^']+)'", text, re.MULTILINE).group(1)


def read_requirements(name):
    """Requirement lines of requirements/NAME.txt (shared with CI scripts)."""
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [line.strip() for line in lines
            if line.strip() and not line.startswith('#')]


setup(
    name='cdetr_mmdet',
    version=read_version(),
    description='Conditional DETR as registered MMDetection 3.x modules',
    # The three packages; the base needs only what they share, the rest is
    # per environment (the extras below).
    # cdetr_testing is the one test-support package (random weights, padded
    # batches, the set-up scripts' stand-in venv): installed so that tests,
    # benchmarks and tools import it as they import cdetr_mmdet, with no
    # sys.path edits; nothing in cdetr_mmdet imports it.
    packages=find_packages(include=['cdetr_mmdet', 'cdetr_mmdet.*',
                                    'cdetr_runtime', 'cdetr_runtime.*',
                                    'cdetr_testing', 'cdetr_testing.*']),
    python_requires='>=3.9',
    install_requires=['numpy'],
    extras_require={
        # The MMDetection plugin cdetr_mmdet (training, testing, export).
        'train': [
            'torch',
            'mmengine>=0.10.5',  # older ones crash on torch >= 2.5
            'mmcv>=2.0.0rc4,<2.2.0',  # mmdet 3.3 asserts mmcv < 2.2.0
            'mmdet>=3.3.0,<3.4.0',
            'scipy',
            'pycocotools',
            'Pillow',  # the dataset check reads image headers
        ],
        'tests': ['pytest', 'transformers', 'safetensors', 'matplotlib'],
        'plot': ['matplotlib'],
        # ONNX export and the ONNX Runtime / OpenVINO runners (docs/deploy.md);
        # onnxscript is what torch.onnx.export(dynamo=True) needs.
        'deploy': ['onnx>=1.16', 'onnxruntime>=1.18', 'openvino>=2024.0',
                   'onnxscript'],
        # INT8 post-training quantisation (tools/export_onnx.py --int8).
        'int8': ['nncf>=2.10'],
        # cdetr_runtime's own needs (requirements/runtime.txt): OpenCV is the
        # image library because mmcv resizes with it (Pillow's bilinear gives
        # other pixels); headless avoids GUI libraries. openvino is optional.
        # Not for the train environment: mmcv and mmengine bring
        # opencv-python, and two OpenCV wheels overwrite each other's cv2.
        'runtime': read_requirements('runtime'),
        'runtime-openvino': read_requirements('runtime') + [
            'openvino>=2024.0'],
    },
    zip_safe=False,
)
