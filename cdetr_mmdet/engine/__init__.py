"""Runner support: divergence guard, CPU distributed, bf16, tool options.

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
from .tool_config import add_run_arguments, load_run_config, parse_run_args

__all__ = [
    'AtomicLocalBackend', 'CdetrCheckpointHook', 'CdetrCPUAmpOptimWrapper',
    'CdetrCPUDistributedDataParallel', 'CdetrDivergenceGuardHook',
    'CdetrInferenceOptimizeHook',
    'CdetrRandomStateHook', 'CdetrStrictLoadHook', 'CheckpointMismatchError',
    'NonFiniteWeightsError', 'TrainingDivergedError', 'add_run_arguments',
    'load_run_config', 'match_state_dict', 'newest_complete_checkpoint',
    'parse_run_args', 'remove_partial_files', 'setup_cpu_distributed'
]
