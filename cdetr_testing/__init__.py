"""Test and benchmark scaffolding, kept out of the installed package.

Random weights, padded batches, random ground truths and detection
differences for parity checks (:mod:`.parity`), and the inverse of the
official checkpoint converter (:mod:`.checkpoints`). Tests and benchmarks
put the repository root on ``sys.path`` to import it; ``setup.py`` does not
install it.
"""
from .checkpoints import expand_to_category_rows, ours_to_official
from .parity import (add_random_gts, detection_differences, padded_batch,
                     randomize_)

__all__ = ['add_random_gts', 'detection_differences', 'expand_to_category_rows',
           'ours_to_official', 'padded_batch', 'randomize_']
