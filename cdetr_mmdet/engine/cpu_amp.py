"""bf16 mixed-precision training on CPU, registered as ``CdetrCPUAmpOptimWrapper``.

mmengine 0.10.7's ``AmpOptimWrapper`` refuses to start without an
accelerator. On CPU, bf16 autocast needs no loss scaling (bf16 has fp32's
exponent range), so a plain ``OptimWrapper`` whose ``optim_context`` also
enters ``torch.autocast('cpu', dtype=torch.bfloat16)`` is enough. It pays on
CPUs with native bf16 matrix units (AVX512-BF16, AMX); elsewhere autocast
emulates bf16 and is usually slower than fp32.

Example::

    optim_wrapper = dict(type='CdetrCPUAmpOptimWrapper',
                         optimizer=dict(type='AdamW', lr=1e-4))
"""
from contextlib import contextmanager
from typing import Union

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class CdetrCPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that runs the forward pass under CPU bf16 autocast.

    Overrides :meth:`optim_context` only; gradients, clipping and the
    optimiser step stay fp32 (parameters are never cast).

    Args:
        dtype (str | torch.dtype): Autocast dtype; CPU autocast supports
            only ``'bfloat16'``. Defaults to ``'bfloat16'``.
        **kwargs: Passed to :class:`mmengine.optim.OptimWrapper`
            (``optimizer``, ``clip_grad``, ``accumulative_counts``).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16',
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
        if dtype != torch.bfloat16:
            raise ValueError('CdetrCPUAmpOptimWrapper supports only '
                             f"dtype='bfloat16' on CPU, got {dtype}")
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient-accumulation context plus CPU bf16 autocast.

        Args:
            model (nn.Module): The training model.
        """
        with super().optim_context(model), torch.autocast(
                device_type='cpu', dtype=self.cast_dtype):
            yield
