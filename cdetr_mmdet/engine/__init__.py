"""Runner support: atomic checkpoint writes and CPU distributed training."""
from .atomic_backend import AtomicLocalBackend
from .cpu_ddp import CdetrCPUDistributedDataParallel, setup_cpu_distributed

__all__ = [
    'AtomicLocalBackend', 'CdetrCPUDistributedDataParallel',
    'setup_cpu_distributed'
]
