"""Runner support: atomic checkpoint writes, CPU distributed and bf16 training."""
from .atomic_backend import AtomicLocalBackend
from .cpu_amp import CdetrCPUAmpOptimWrapper
from .cpu_ddp import CdetrCPUDistributedDataParallel, setup_cpu_distributed

__all__ = [
    'AtomicLocalBackend', 'CdetrCPUAmpOptimWrapper',
    'CdetrCPUDistributedDataParallel', 'setup_cpu_distributed'
]
