"""Training and loading faults on the tiny config (docs/reliability.md).

Strict ``load_from``/``--resume``/test loading, the fine-tuning opt-in, the
divergence guard, NaN checkpoints, a full disk under ``max_keep_ckpts=1``,
an empty ``last_checkpoint``, unsafe checkpoints on every loading path, and
resume continuing with the same losses as an uninterrupted run.
"""
import errno
import glob
import importlib.util
import math
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

from cdetr_mmdet.apis import CdetrDetInferencer, init_detector
from cdetr_mmdet.checkpoint.safety import UnsafeCheckpointError
from cdetr_mmdet.engine import (CdetrDivergenceGuardHook,
                                CheckpointMismatchError,
                                NonFiniteWeightsError, TrainingDivergedError)
from conftest import ROOT
from test_integration import (TINY_CFG, Recorder, data_root,  # noqa: F401 (fixture)
                              set_data_root)

# Resumed and uninterrupted runs do the same float operations in the same
# order on CPU: they agree to rounding.
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6


def tiny_cfg(data_root: Path, work_dir: Path, max_iters: int,
             interval: int, **changes) -> Config:
    """The tiny config with RandomFlip, seeded, no validation."""
    cfg = set_data_root(Config.fromfile(str(TINY_CFG)), data_root)
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.train_dataloader.dataset.pipeline.insert(
        2, dict(type='RandomFlip', prob=0.5))
    cfg.train_cfg.update(max_iters=max_iters, val_interval=1000)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # ends runs
    cfg.default_hooks.checkpoint.update(interval=interval)
    cfg.default_hooks.logger.interval = 1
    cfg.merge_from_dict(changes)
    return cfg


def train(cfg: Config, *hooks: Hook) -> Recorder:
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    for hook in (recorder, *hooks):
        runner.register_hook(hook)
    runner.train()
    return recorder


def log_text(work_dir: Path) -> str:
    return ''.join(Path(p).read_text()
                   for p in glob.glob(str(work_dir / '*' / '*.log')))


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    """6 iterations, checkpoints at 3 and 6, 4 classes; umask 022."""
    work_dir = tmp_path_factory.mktemp('work')
    old = os.umask(0o022)
    try:
        recorder = train(tiny_cfg(data_root, work_dir, 6, 3))
    finally:
        os.umask(old)
    return work_dir, recorder.losses


def test_good_path_keeps_permissions_and_last_checkpoint(trained):
    work_dir, losses = trained
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    for name in ('iter_3.pth', 'iter_6.pth'):
        assert stat.S_IMODE((work_dir / name).stat().st_mode) == 0o644
    assert (work_dir / 'last_checkpoint').read_text() == str(
        work_dir / 'iter_6.pth')
    assert not glob.glob(str(work_dir / '.cdetr-partial-*'))


def test_resume_gives_the_uninterrupted_losses_iter_based(
        trained, data_root, tmp_path):
    # "Interrupted" = stopped after iteration 3 (its checkpoint): a kill -9
    # after that save leaves the same files, and is much slower to stage.
    work_dir, losses = trained
    cfg = tiny_cfg(data_root, tmp_path, 6, 3, resume=True,
                   load_from=str(work_dir / 'iter_3.pth'))
    resumed = train(cfg)
    assert resumed.start_iter == 3
    torch.testing.assert_close(resumed.losses, losses[3:], rtol=LOSS_RTOL,
                               atol=LOSS_ATOL)


def epoch_cfg(data_root, work_dir, num_workers, **changes):
    """3 epochs of 1 iteration (batch 8 of the 8 images), shuffled."""
    cfg = tiny_cfg(data_root, work_dir, 3, 1, **changes)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3,
                         val_interval=1000)
    cfg.train_dataloader.update(
        batch_size=8, num_workers=num_workers,
        persistent_workers=num_workers > 0,
        sampler=dict(type='DefaultSampler', shuffle=True))
    cfg.default_hooks.checkpoint.update(by_epoch=True, interval=1)
    cfg.log_processor = dict(by_epoch=True)
    return cfg


@pytest.mark.parametrize('num_workers', [0, 1])
def test_resume_gives_the_uninterrupted_losses_epoch_based(
        data_root, tmp_path, num_workers):
    full = train(epoch_cfg(data_root, tmp_path / 'full', num_workers))
    resume = dict(resume=True, load_from=str(tmp_path / 'full' /
                                             'epoch_1.pth'))
    resumed = train(epoch_cfg(data_root, tmp_path / 'resumed', num_workers,
                              **resume))
    assert resumed.start_iter == 1
    torch.testing.assert_close(resumed.losses, full.losses[1:],
                               rtol=LOSS_RTOL, atol=LOSS_ATOL)
    if num_workers == 0:  # without the hook the flips, hence losses, differ
        cfg = epoch_cfg(data_root, tmp_path / 'plain', num_workers, **resume)
        cfg.default_hooks.pop('random_state')
        plain = train(cfg)
        with pytest.raises(AssertionError):
            torch.testing.assert_close(plain.losses, full.losses[1:],
                                       rtol=1e-3, atol=1e-3)


def five_class_cfg(cfg: Config) -> Config:
    cfg.model.bbox_head.num_classes = 5
    return cfg


def other_architecture_cfg(cfg: Config) -> Config:
    """d=64 instead of 32: every transformer tensor changes shape."""
    cfg.model.neck.out_channels = 64
    cfg.model.positional_encoding.num_feats = 32
    for part in ('encoder', 'decoder'):
        cfg.model[part].layer_cfg.embed_dims = 64
    cfg.model.bbox_head.embed_dims = 64
    return cfg


MISMATCH = re.compile(
    r'Checkpoint (\S+) does not fit the model \((\d+) of (\d+) model tensors '
    r'named in it\): .*Check that the config matches the checkpoint '
    r'\(architecture, num_classes\)')
FC_CLS_MISMATCH = (
    '2 shape mismatches (bbox_head.fc_cls.weight: checkpoint (4, 32) vs '
    'model (5, 32), bbox_head.fc_cls.bias: checkpoint (4,) vs model (5,))')


@pytest.mark.parametrize('resume', [False, True])
def test_load_from_or_resume_another_architecture_stops_before_training(
        trained, data_root, tmp_path, resume):
    work_dir, _ = trained
    ckpt = str(work_dir / 'iter_6.pth')
    cfg = other_architecture_cfg(tiny_cfg(data_root, tmp_path, 7, 1,
                                          load_from=ckpt, resume=resume))
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder)
    with pytest.raises(CheckpointMismatchError) as error:
        runner.train()
    match = MISMATCH.match(str(error.value))
    assert match and match.group(1) == ckpt, str(error.value)
    assert 'shape mismatches (neck.convs.0.conv.weight: checkpoint ' \
        '(32, 128, 1, 1) vs model (64, 128, 1, 1)' in str(error.value)
    assert recorder.losses == [] and not glob.glob(str(tmp_path / '*.pth'))


def test_runner_test_with_another_architecture_fails(trained, data_root,
                                                    tmp_path):
    work_dir, _ = trained
    cfg = other_architecture_cfg(tiny_cfg(
        data_root, tmp_path, 1, 1, load_from=str(work_dir / 'iter_6.pth')))
    with pytest.raises(CheckpointMismatchError, match=MISMATCH.pattern):
        Runner.from_cfg(cfg).test()


def test_tools_test_with_5_classes_on_a_4_class_checkpoint_exits_non_zero(
        trained, data_root, tmp_path):
    work_dir, _ = trained
    cfg = five_class_cfg(tiny_cfg(data_root, tmp_path, 1, 1))
    cfg.dump(str(tmp_path / 'config.py'))
    out = subprocess.run(
        [sys.executable, 'tools/test.py', str(tmp_path / 'config.py'),
         str(work_dir / 'iter_6.pth'), '--work-dir', str(tmp_path / 'test')],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'CheckpointMismatchError: Checkpoint ' in out.stderr
    assert FC_CLS_MISMATCH in out.stderr
    assert 'Average Precision' not in out.stdout + out.stderr


class Snapshot(Hook):
    """The model's state right after loading, before the first step."""

    def before_train(self, runner):
        self.state = {k: v.clone() for k, v in
                      runner.model.state_dict().items()}


def drop_class_head(src: Path, dst: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        'drop_class_head', ROOT / 'tools' / 'drop_class_head.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.drop_class_head(src, dst)


@pytest.mark.parametrize('headless', [False, True])
def test_fine_tune_with_another_class_count_is_an_opt_in(
        trained, data_root, tmp_path, headless):
    work_dir, _ = trained
    ckpt = work_dir / 'iter_6.pth'
    if headless:  # tools/drop_class_head.py output loads the same way
        drop_class_head(ckpt, tmp_path / 'headless.pth')
        ckpt = tmp_path / 'headless.pth'
    classes = ('ellipse', 'rectangle', 'triangle')
    cfg = tiny_cfg(data_root, tmp_path, 1, 1, load_from=str(ckpt),
                   load_from_skip=['bbox_head.fc_cls'])
    cfg.train_dataloader.dataset.metainfo = dict(classes=classes)
    cfg.model.bbox_head.num_classes = 3
    snapshot = Snapshot()
    train(cfg, snapshot)
    source = torch.load(ckpt)['state_dict']
    for key, value in snapshot.state.items():
        if key.startswith('bbox_head.fc_cls.'):
            assert value.shape[0] == 3
        else:
            torch.testing.assert_close(value, source[key], rtol=0, atol=0)
    left_out = '' if headless else \
        ' (bbox_head.fc_cls.bias, bbox_head.fc_cls.weight)'
    assert (f"load_from_skip=['bbox_head.fc_cls']: 2 model tensors keep "
            'their initialisation (bbox_head.fc_cls.weight, '
            f'bbox_head.fc_cls.bias); {0 if headless else 2} tensors of '
            f'{ckpt} not loaded{left_out}') in log_text(tmp_path)


class PoisonAt(Hook):
    """Make the class head's gradient NaN in iteration ``at``.

    Divergence shows first in the gradients: the loss is still finite, the
    gradient norm is not, and the clipped step turns every weight NaN.
    """

    def __init__(self, at):
        self.at, self.handle = at, None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            self.handle = runner.model.bbox_head.fc_cls.weight.register_hook(
                lambda grad: torch.full_like(grad, float('nan')))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self.handle is not None:
            self.handle.remove()


def assert_last_good_checkpoint(work_dir: Path, name: str) -> None:
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / name)
    assert sorted(p.name for p in work_dir.glob('*.pth')) == [name]
    state = torch.load(work_dir / name)['state_dict']
    assert all(bool(torch.isfinite(v).all()) for v in state.values()
               if v.is_floating_point())
    assert not glob.glob(str(work_dir / '.cdetr-partial-*'))


def test_nan_loss_stops_training_before_its_checkpoint(data_root, tmp_path):
    cfg = tiny_cfg(data_root, tmp_path, 6, 2)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    with pytest.raises(TrainingDivergedError) as error:
        train(cfg, PoisonAt(4))
    message = str(error.value)
    assert re.match(
        r'Training diverged at iteration 4 \(epoch 1\): non-finite loss or '
        r'gradient norm\. Loss terms: loss=[0-9.]+, d0\.loss_cls=[0-9.]+, ',
        message), message
    assert '; lr: 0.001; gradient norm: nan. No checkpoint was written for ' \
        'this iteration; last_checkpoint still names ' \
        f'{tmp_path / "iter_2.pth"}. Try: a lower optimizer lr' in message
    assert 'weights_only' not in message
    assert_last_good_checkpoint(tmp_path, 'iter_2.pth')


def test_nan_weights_are_never_saved_without_the_guard(data_root, tmp_path):
    cfg = tiny_cfg(data_root, tmp_path, 6, 2)
    cfg.default_hooks.pop('divergence_guard')
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    with pytest.raises(NonFiniteWeightsError) as error:
        train(cfg, PoisonAt(4))
    assert re.fullmatch(
        r'Refusing to write iter_4\.pth: \d+ tensors of the model hold NaN '
        r'or inf \(.*\)\. The previous checkpoint ' + re.escape(
            str(tmp_path / 'iter_2.pth')) + r' is kept and last_checkpoint '
        r'still names it\.', str(error.value)), str(error.value)
    assert_last_good_checkpoint(tmp_path, 'iter_2.pth')


def test_exploding_loss_stops_training(data_root, tmp_path):
    cfg = tiny_cfg(data_root, tmp_path, 4, 1)
    # Explodes at iteration 2; 1e4 already gives NaN predictions there, which
    # the matcher reports as divergence before any loss exists. How the
    # explosion shows at iteration 2 depends on the CPU's kernels: the loss
    # exceeds 10x the median (AVX2 machines), or the gradient norm is already
    # infinite (seen on an AMX machine). Either is the guard doing its job;
    # the iteration, the lr, the checkpoint kept and the message's advice
    # are the same either way.
    cfg.optim_wrapper.optimizer.lr = 1e3
    with pytest.raises(TrainingDivergedError) as error:
        train(cfg)
    message = str(error.value)
    reason = (r'(loss \S+ exceeds 10 x the median \S+ of the last 1 '
              r'iterations|non-finite loss or gradient norm)')
    assert re.match(
        r'Training diverged at iteration 2 \(epoch 1\): ' + reason +
        r'\. Loss terms: loss=\S+, .*; lr: 1e\+03; gradient norm: \S+\. '
        r'No checkpoint was written for this iteration; last_checkpoint '
        r'still names ' + re.escape(str(tmp_path / 'iter_1.pth')) + r'\. ',
        message), message
    assert not (tmp_path / 'iter_2.pth').exists()
    assert_last_good_checkpoint(tmp_path, 'iter_1.pth')


def test_fp16_guard_tolerates_skipped_steps_until_they_persist():
    hub = MessageHub.get_instance('cdetr_test_amp_guard')
    runner = SimpleNamespace(
        iter=0, epoch=0, message_hub=hub,
        optim_wrapper=SimpleNamespace(loss_scaler=object(),
                                      get_lr=lambda: dict(lr=[1e-4])))
    guard = CdetrDivergenceGuardHook(max_skipped_steps=3)
    nan = dict(loss=torch.tensor(float('nan')))
    for loss in (nan, nan, dict(loss=torch.tensor(1.0)), nan, nan):
        guard.after_train_iter(runner, 0, outputs=loss)  # the scaler's job
        runner.iter += 1
    with pytest.raises(TrainingDivergedError,
                       match=r'iteration 6 \(epoch 1\): the fp16 loss scaler '
                       r'skipped 3 steps in a row'):
        guard.after_train_iter(runner, 0, outputs=nan)
    # The default (docs/reliability.md checkpoint row 13): 19 skips in a row pass, the 20th stops.
    guard, runner.iter = CdetrDivergenceGuardHook(), 0
    for _ in range(19):
        guard.after_train_iter(runner, 0, outputs=nan)
        runner.iter += 1
    with pytest.raises(TrainingDivergedError,
                       match=r'iteration 20 \(epoch 1\): the fp16 loss scaler '
                       r'skipped 20 steps in a row'):
        guard.after_train_iter(runner, 0, outputs=nan)


def test_full_disk_with_max_keep_1_keeps_the_last_checkpoint(
        data_root, tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        name = os.readlink(f'/proc/self/fd/{fd}')
        if name.endswith('iter_6.pth'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync)
    cfg = tiny_cfg(data_root, tmp_path, 6, 2)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    with pytest.raises(OSError, match='No space left on device'):
        train(cfg)
    # iter_2 was deleted after iter_4 and last_checkpoint were complete.
    assert_last_good_checkpoint(tmp_path, 'iter_4.pth')


def test_empty_last_checkpoint_resumes_from_the_newest(trained, data_root,
                                                      tmp_path):
    work_dir, losses = trained
    for name in ('iter_3.pth', 'iter_6.pth'):
        (tmp_path / name).write_bytes((work_dir / name).read_bytes())
    os.utime(tmp_path / 'iter_3.pth', (1, 1))
    (tmp_path / 'last_checkpoint').write_text('')  # a killed in-place write
    resumed = train(tiny_cfg(data_root, tmp_path, 7, 10, resume=True))
    assert resumed.start_iter == 6 and len(resumed.losses) == 1
    assert (f'{tmp_path / "last_checkpoint"} is empty; resuming from the '
            f'newest complete checkpoint {tmp_path / "iter_6.pth"} instead'
            ) in log_text(tmp_path)


@pytest.fixture(scope='module')
def unsafe_checkpoint(tmp_path_factory):
    class RunsCodeOnLoad:
        def __reduce__(self):
            return os.system, ('true', )

    path = tmp_path_factory.mktemp('unsafe') / 'evil.pth'
    torch.save({'state_dict': {}, 'x': RunsCodeOnLoad()}, path)
    return path


def assert_unsafe_message(error, path) -> None:
    message = str(error.value)
    assert message.startswith(
        f'Refused to load checkpoint {str(path)!r}: it references '
        'posix.system, outside the allow-list')
    assert 'the file is unsafe' in message and 'weights_only' not in message


@pytest.mark.parametrize('path', ['load_from', 'resume', 'test'])
def test_unsafe_checkpoint_on_runner_paths(unsafe_checkpoint, data_root,
                                           tmp_path, path):
    cfg = tiny_cfg(data_root, tmp_path, 1, 1,
                   load_from=str(unsafe_checkpoint), resume=path == 'resume')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(UnsafeCheckpointError) as error:
        runner.test() if path == 'test' else runner.train()
    assert_unsafe_message(error, unsafe_checkpoint)


def test_unsafe_checkpoint_on_inference_paths(unsafe_checkpoint, trained):
    from mmdet.apis import DetInferencer
    from mmdet.apis import init_detector as mmdet_init_detector
    config = str(trained[0] / 'tiny_cdetr_shapes.py')
    for load in (init_detector, mmdet_init_detector,
                 lambda c, w: DetInferencer(c, w, device='cpu'),
                 lambda c, w: CdetrDetInferencer(c, w, device='cpu')):
        with pytest.raises(UnsafeCheckpointError) as error:
            load(config, str(unsafe_checkpoint))
        assert_unsafe_message(error, unsafe_checkpoint)


def test_inference_entry_points_load_strictly(trained, tmp_path):
    work_dir, _ = trained
    ckpt = str(work_dir / 'iter_6.pth')
    config = Config.fromfile(str(work_dir / 'tiny_cdetr_shapes.py'))
    model = init_detector(config, ckpt)
    torch.testing.assert_close(model.state_dict(),
                               torch.load(ckpt)['state_dict'])
    assert model.dataset_meta['classes'] == (
        'ellipse', 'rectangle', 'triangle', 'cross')
    five_class_cfg(config)
    for load in (init_detector,
                 lambda c, w: CdetrDetInferencer(c, w, device='cpu')):
        with pytest.raises(CheckpointMismatchError) as error:
            load(config, ckpt)
        assert FC_CLS_MISMATCH in str(error.value)


def test_tools_infer_refuses_unsafe_and_mismatching_checkpoints(
        unsafe_checkpoint, trained, data_root, tmp_path):
    """tools/infer.py (reliability checkpoint rows 5 and 10): exit code 1, our error as the
    last line, no PNG written."""
    work_dir, _ = trained
    image = sorted((data_root / 'val').glob('*.png'))[0]
    config = work_dir / 'tiny_cdetr_shapes.py'
    five = tmp_path / 'five_classes.py'
    five_class_cfg(Config.fromfile(str(config))).dump(str(five))
    for cfg, ckpt, error in ((config, unsafe_checkpoint, 'UnsafeCheckpointError'),
                             (five, work_dir / 'iter_6.pth', 'CheckpointMismatchError')):
        out = subprocess.run(
            [sys.executable, 'tools/infer.py', str(image), str(cfg), str(ckpt),
             '--out-dir', str(tmp_path / 'out')], cwd=ROOT, capture_output=True, text=True,
            timeout=300)
        assert out.returncode == 1
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith(f'cdetr_mmdet.checkpoint.safety.{error}: ' if error.startswith(
            'Unsafe') else f'cdetr_mmdet.checkpoint.state_dict_check.{error}: '), last
        if error.startswith('Unsafe'):
            assert f'Refused to load checkpoint {str(ckpt)!r}: it references posix.system' in last
        else:
            assert FC_CLS_MISMATCH in last
        assert not (tmp_path / 'out').exists() or not list((tmp_path / 'out').rglob('*.png'))


@pytest.mark.parametrize(
    'path', sorted(p for p in (ROOT / 'configs').rglob('*.py')
                   if '_base_' not in p.parts), ids=lambda p: p.name)
def test_every_config_has_the_reliability_hooks(path):
    hooks = Config.fromfile(str(path)).default_hooks
    assert {name: hooks[name]['type'] for name in (
        'checkpoint', 'strict_load', 'divergence_guard', 'random_state')} == {
            'checkpoint': 'CdetrCheckpointHook',
            'strict_load': 'CdetrStrictLoadHook',
            'divergence_guard': 'CdetrDivergenceGuardHook',
            'random_state': 'CdetrRandomStateHook'}
    assert hooks.checkpoint.backend_args == dict(backend='cdetr_atomic_local')
