"""Distributed data parallel on CPU (gloo), registered as ``CdetrCPUDistributedDataParallel``.

mmengine 0.10.7 cannot start distributed training without CUDA:
``init_dist('pytorch')`` calls ``torch.cuda.set_device`` and the runner wraps
the model in DDP with ``device_ids=[LOCAL_RANK]``, which torch rejects for a
CPU module. :func:`setup_cpu_distributed` initialises a gloo process group
itself (the runner then skips ``init_dist``) and selects this wrapper, which
drops ``device_ids``. On machines with CUDA it does nothing.
"""
import os
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CdetrCPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules (no ``device_ids``).

    Args:
        module (torch.nn.Module): The model to wrap.
        device_ids (Sequence[int], optional): Ignored: CPU modules take none.
        **kwargs: Passed to ``MMDistributedDataParallel``.
    """

    def __init__(self, module: torch.nn.Module,
                 device_ids: Optional[Sequence[int]] = None,
                 **kwargs: Any) -> None:
        super().__init__(module=module, **kwargs)


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Prepare ``cfg`` for distributed training on CPU processes.

    Args:
        cfg (Config): The run's config; ``model_wrapper_cfg`` and
            ``env_cfg.dist_cfg.backend`` are set when running on CPU.
        launcher (str): The ``--launcher`` argument.

    Raises:
        RuntimeError: For a launcher other than ``pytorch`` on CPU.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs CUDA; on CPU start the processes '
            'with tools/dist_train.sh (torchrun, --launcher pytorch)')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = \
        'gloo'
    cfg.setdefault('model_wrapper_cfg',
                   dict(type='CdetrCPUDistributedDataParallel'))
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo',
                                rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']))
