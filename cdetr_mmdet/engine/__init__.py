"""Runner support: divergence guard, CPU distributed, bf16, run config.

The checkpoint hooks and backend live in :mod:`cdetr_mmdet.checkpoint`; their
names are re-exported here for the runner-facing API.
"""
from ..checkpoint import (AtomicLocalBackend, CdetrCheckpointHook,
                          CdetrStrictLoadHook, CheckpointMismatchError,
                          NonFiniteWeightsError, match_state_dict,
                          newest_complete_checkpoint, remove_partial_files)
from .cpu_amp import CdetrCPUAmpOptimWrapper
from .cpu_ddp import CdetrCPUDistributedDataParallel, setup_cpu_distributed
from .inference_optimize_hook import CdetrInferenceOptimizeHook
from .divergence_guard import CdetrDivergenceGuardHook, TrainingDivergedError
from .random_state_hook import CdetrRandomStateHook
from .run_config import load_run_config

__all__ = [
    'AtomicLocalBackend', 'CdetrCheckpointHook', 'CdetrCPUAmpOptimWrapper',
    'CdetrCPUDistributedDataParallel', 'CdetrDivergenceGuardHook',
    'CdetrInferenceOptimizeHook',
    'CdetrRandomStateHook', 'CdetrStrictLoadHook', 'CheckpointMismatchError',
    'NonFiniteWeightsError', 'TrainingDivergedError',
    'load_run_config', 'match_state_dict', 'newest_complete_checkpoint',
    'remove_partial_files', 'setup_cpu_distributed'
]
