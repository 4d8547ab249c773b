"""Runner support: safe checkpoints, divergence guard, CPU distributed and bf16."""
from .atomic_backend import AtomicLocalBackend, remove_partial_files
from .checkpoint_hook import (CdetrCheckpointHook, NonFiniteWeightsError,
                              newest_complete_checkpoint)
from .cpu_amp import CdetrCPUAmpOptimWrapper
from .cpu_ddp import CdetrCPUDistributedDataParallel, setup_cpu_distributed
from .divergence_guard import CdetrDivergenceGuardHook, TrainingDivergedError
from .random_state_hook import CdetrRandomStateHook
from .state_dict_check import CheckpointMismatchError, match_state_dict
from .strict_load_hook import CdetrStrictLoadHook

__all__ = [
    'AtomicLocalBackend', 'CdetrCheckpointHook', 'CdetrCPUAmpOptimWrapper',
    'CdetrCPUDistributedDataParallel', 'CdetrDivergenceGuardHook',
    'CdetrRandomStateHook', 'CdetrStrictLoadHook', 'CheckpointMismatchError',
    'NonFiniteWeightsError', 'TrainingDivergedError', 'match_state_dict',
    'newest_complete_checkpoint', 'remove_partial_files',
    'setup_cpu_distributed'
]
