"""Resume with the augmentation's random state, registered as ``CdetrRandomStateHook``.

Data augmentation (``RandomFlip``, ``RandomChoiceResize``, ...) draws from
Python's ``random`` and numpy's global generator; dropout from torch's. A
resumed run reseeds them from ``randomness.seed``, so its augmentation and
dropout differ from the uninterrupted run's. This hook

- saves the main process's Python, numpy, torch (and CUDA) generator states
  in every checkpoint (``checkpoint['cdetr_random_state']``) and, when
  resuming an epoch-based run, restores them at the start of the first
  epoch. Both runs restart each epoch from the state saved at the end of the
  previous one (the state also cancels what validation drew in between).
  Iteration-based loops need no restore for the data: mmengine replays the
  data pipeline for the iterations already done, from the same seeded state;
- seeds dataloader workers from ``(seed, epoch, rank, worker)`` and restarts
  persistent workers at each epoch: mmengine seeds workers from
  ``(seed, rank, worker)`` only once, so persistent workers carried their
  state across epochs, which a resumed run cannot reproduce. Restarting
  costs one worker start per epoch.
"""
import random
from functools import partial
from typing import Optional

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dataset.utils import worker_init_fn
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop

__all__ = ['CdetrRandomStateHook']

KEY = 'cdetr_random_state'


def get_random_state() -> dict:
    """The main process's generator states, as weights-only-loadable data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(python=random.getstate(),
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.copy()),
                            pos=int(pos), has_gauss=int(has_gauss),
                            gauss=float(gauss)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    """Restore what :func:`get_random_state` returned."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy = state['numpy']
    np.random.set_state((numpy['kind'], numpy['keys'].numpy(), numpy['pos'],
                         numpy['has_gauss'], numpy['gauss']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class CdetrRandomStateHook(Hook):
    """Save the random state with each checkpoint and restore it on resume."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the generator states in the checkpoint (and for the next
        epoch of this run, see the module docstring)."""
        checkpoint[KEY] = get_random_state()
        if checkpoint.get('meta', {}).get('epoch') == runner.epoch + 1:
            self._pending = checkpoint[KEY]  # saved at an epoch's end

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep a resumed checkpoint's states for the next epoch start."""
        if runner._resume and KEY in checkpoint:
            self._pending = checkpoint[KEY]

    def before_train_epoch(self, runner) -> None:
        """Restore the saved states; seed this epoch's workers."""
        pending, self._pending = self._pending, None
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return
        if pending is not None:
            set_random_state(pending)
        loader = runner.train_dataloader
        seed = runner.seed
        if not loader.num_workers or seed is None:
            return
        # Unique per (epoch, rank, worker), like mmengine's seed + offset.
        offset = loader.num_workers * get_world_size() * runner.epoch
        loader.worker_init_fn = partial(
            worker_init_fn, num_workers=loader.num_workers, rank=get_rank(),
            seed=seed + offset)
        if loader.persistent_workers:
            # torch keeps persistent workers in `_iterator`: drop them so
            # this epoch's workers start with this epoch's seed.
            loader._iterator = None
