"""Test and benchmark scaffolding, kept out of the installed package.

Random weights, padded batches, random ground truths and detection
differences for parity checks (:mod:`.parity`), and the inverse of the
official checkpoint converter (:mod:`.checkpoints`), and the set-up
scripts' stand-in venv (:mod:`.setup_copy`). The one test-support package:
``setup.py`` installs it beside ``cdetr_mmdet`` (``pip install -e .``), so
tests, benchmarks and tools import it with no ``sys.path`` edits; nothing in
``cdetr_mmdet`` imports it.
"""
from .checkpoints import expand_to_category_rows, ours_to_official
from .parity import (add_random_gts, detection_differences, padded_batch,
                     randomize_)

__all__ = ['add_random_gts', 'detection_differences', 'expand_to_category_rows',
           'ours_to_official', 'padded_batch', 'randomize_']
