"""Runner support: atomic checkpoint writes, CPU distributed and bf16 training."""
from .atomic_backend import AtomicLocalBackend
from .cpu_amp import CdetrCPUAmpOptimWrapper
from .cpu_ddp import CdetrCPUDistributedDataParallel, setup_cpu_distributed
from .tool_config import add_run_arguments, load_run_config, parse_run_args

__all__ = [
    'AtomicLocalBackend', 'CdetrCPUAmpOptimWrapper',
    'CdetrCPUDistributedDataParallel', 'add_run_arguments', 'load_run_config',
    'parse_run_args', 'setup_cpu_distributed'
]
