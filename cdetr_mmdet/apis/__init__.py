"""Inference entry points: strict, weights-only checkpoint loading."""
from .checkpoint import CdetrDetInferencer, init_detector

__all__ = ['CdetrDetInferencer', 'init_detector']
