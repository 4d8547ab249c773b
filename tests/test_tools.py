"""The command-line tools and shell scripts, without a model or data.

``tools/train.py`` and ``tools/test.py`` run in-process on a stub config whose
runner only records the config the tool resolved. The shell scripts run against stubs (a fake ``torchrun``/``srun`` on PATH, a
fake set-up script and venv python) that print the arguments they got.
"""
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from mmengine.registry import RUNNERS

REPO_ROOT = Path(__file__).resolve().parents[1]
SHELL_SCRIPTS = sorted(REPO_ROOT.glob('tools/*.sh')) + [REPO_ROOT / '.ci/run']


def write_stub(path, body):
    """An executable bash script at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/usr/bin/env bash\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def run(args, **kwargs):
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, **kwargs)


class RecordingRunner:
    """Stands in for mmengine's Runner: records the config a tool resolved."""

    last = None

    def __init__(self, cfg):
        self.cfg = cfg
        self.mode = None
        self.test_evaluator = types.SimpleNamespace(metrics=[])
        RecordingRunner.last = self

    @classmethod
    def from_cfg(cls, cfg):
        return cls(cfg)

    def train(self):
        self.mode = 'train'

    def test(self):
        self.mode = 'test'


if RUNNERS.get('RecordingRunner') is None:
    RUNNERS.register_module(module=RecordingRunner)

TOOL_CONFIG = """
runner_type = 'RecordingRunner'
model = dict(type='CdetrConditionalDETR')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
test_dataloader = dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile'),
                                              dict(type='PackDetInputs')]))
"""


def run_tool(name, args, monkeypatch, tmp_path, config_text=TOOL_CONFIG):
    """Run ``tools/<name>`` in-process on a stub config; returns the runner."""
    config = tmp_path / 'cfg.py'
    config.write_text(config_text)
    # As ``python tools/<name>`` does: the script's folder on sys.path (its
    # sibling tools/run_args.py).
    monkeypatch.syspath_prepend(str(REPO_ROOT / 'tools'))
    spec = importlib.util.spec_from_file_location(
        f'{name[:-3]}_tool', REPO_ROOT / 'tools' / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    monkeypatch.setattr(sys, 'argv', [name, str(config), *args])
    RecordingRunner.last = None
    module.main()
    return RecordingRunner.last


def test_train_tool_applies_its_options(monkeypatch, tmp_path):
    runner = run_tool('train.py', [
        '--work-dir', str(tmp_path / 'w'), '--resume', 'ckpt.pth', '--amp',
        '--cfg-options', 'optim_wrapper.optimizer.lr=0.5', '--local_rank', '3',
        '--auto-scale-lr'], monkeypatch, tmp_path,
        TOOL_CONFIG + 'auto_scale_lr = dict(enable=False, base_batch_size=16)\n')
    cfg = runner.cfg
    assert runner.mode == 'train'
    assert cfg.work_dir == str(tmp_path / 'w')
    assert cfg.resume is True and cfg.load_from == 'ckpt.pth'
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if torch.cuda.is_available()
                                      else 'CdetrCPUAmpOptimWrapper')
    assert cfg.optim_wrapper.optimizer.lr == 0.5
    assert cfg.auto_scale_lr.enable is True
    assert cfg.launcher == 'none' and os.environ['LOCAL_RANK'] == '3'


def test_train_tool_defaults_and_auto_resume(monkeypatch, tmp_path):
    runner = run_tool('train.py', [], monkeypatch, tmp_path)
    assert runner.cfg.work_dir == os.path.join('./work_dirs', 'cfg')
    assert 'resume' not in runner.cfg and runner.cfg.optim_wrapper.type == 'OptimWrapper'
    runner = run_tool('train.py', ['--resume'], monkeypatch, tmp_path)
    assert runner.cfg.resume is True and runner.cfg.load_from is None


def test_train_tool_auto_scale_lr_needs_the_config_entry(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match='Can not find "auto_scale_lr"'):
        run_tool('train.py', ['--auto-scale-lr'], monkeypatch, tmp_path)


def test_test_tool_loads_checkpoint_dumps_and_wraps_tta(monkeypatch, tmp_path):
    with pytest.warns(UserWarning) as warned:
        runner = run_tool('test.py', ['ckpt.pth', '--out', str(tmp_path / 'r.pkl'),
                                      '--tta'], monkeypatch, tmp_path)
    assert [str(w.message).split('``')[1] for w in warned] == ['tta_model', 'tta_pipeline']
    cfg = runner.cfg
    assert runner.mode == 'test' and cfg.load_from == 'ckpt.pth'
    assert [type(m).__name__ for m in runner.test_evaluator.metrics] == ['DumpDetResults']
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.module.type == 'CdetrConditionalDETR'
    assert cfg.test_dataloader.dataset.pipeline[-1]['type'] == 'TestTimeAug'


def test_test_tool_refuses_a_dump_that_is_not_a_pickle(monkeypatch, tmp_path):
    with pytest.raises(AssertionError, match='The dump file must be a pkl file.'):
        run_tool('test.py', ['ckpt.pth', '--out', str(tmp_path / 'r.json')], monkeypatch,
                 tmp_path)


@pytest.mark.parametrize('script', SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_script_syntax(script):
    result = run(['bash', '-n', str(script)])
    assert result.returncode == 0, result.stderr


@pytest.fixture
def stub_path(tmp_path):
    """PATH with ``torchrun`` and ``srun`` stubs that echo their arguments."""
    bin_dir = tmp_path / 'bin'
    for name in ('torchrun', 'srun'):
        write_stub(bin_dir / name,
                   f'echo "{name} PYTHONPATH=$PYTHONPATH"; '
                   'printf "%s\\n" "$@"\n')
    return dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')


def test_dist_train_uses_torchrun(stub_path):
    env = dict(stub_path, NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.7',
               PORT='29999', PYTHONPATH='/callers/path')
    result = run(['bash', str(REPO_ROOT / 'tools/dist_train.sh'), 'cfg.py',
                  '4', '--amp', '--cfg-options', 'a=1'], env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The installed package is imported: the caller's PYTHONPATH, unedited.
    assert lines[0] == 'torchrun PYTHONPATH=/callers/path'
    assert lines[1:] == [
        '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.7',
        '--master_port=29999', '--nproc_per_node=4',
        str(REPO_ROOT / 'tools/train.py'), 'cfg.py', '--launcher', 'pytorch',
        '--amp', '--cfg-options', 'a=1'
    ]


def test_dist_test_defaults(stub_path):
    env = {k: v for k, v in stub_path.items()
           if k not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT')}
    result = run(['bash', str(REPO_ROOT / 'tools/dist_test.sh'), 'cfg.py',
                  'ckpt.pth', '1', '--out', 'r.pkl'], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        '--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
        '--master_port=29500', '--nproc_per_node=1',
        str(REPO_ROOT / 'tools/test.py'), 'cfg.py', 'ckpt.pth', '--launcher',
        'pytorch', '--out', 'r.pkl'
    ]


def test_slurm_train_uses_srun(stub_path):
    env = dict(stub_path, GPUS='2', GPUS_PER_NODE='2', PYTHONPATH='')
    result = run(['bash', str(REPO_ROOT / 'tools/slurm_train.sh'), 'part',
                  'job', 'cfg.py', 'work', '--amp'], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == 'srun PYTHONPATH='  # not edited
    args = result.stdout.splitlines()[1:]
    assert args[:2] == ['-p', 'part']
    assert '--ntasks=2' in args and '--gres=gpu:2' in args
    assert args[-7:] == [
        'python', '-u', str(REPO_ROOT / 'tools/train.py'), 'cfg.py',
        '--work-dir=work', '--launcher=slurm', '--amp'
    ]


@pytest.fixture
def fake_repo(tmp_path):
    """A copy of run_tests.sh and .ci/run beside stubbed set-up and venv."""
    repo = tmp_path / 'repo'
    (repo / 'tools').mkdir(parents=True)
    (repo / '.ci').mkdir()
    shutil.copy(REPO_ROOT / 'tools/run_tests.sh', repo / 'tools')
    shutil.copy(REPO_ROOT / '.ci/run', repo / '.ci')
    write_stub(repo / 'tools/setup_env.sh',
               'echo "setup PIP_FIND_LINKS=$PIP_FIND_LINKS"\n')
    write_stub(repo / '.venv/bin/python',
               'printf "%s\\n" "$@"; exit "${FAKE_PYTEST_STATUS:-0}"\n')
    write_stub(repo / 'tools/run_runtime_tests.sh',
               'echo "runtime tests"; exit "${FAKE_RUNTIME_STATUS:-0}"\n')
    return repo


def test_run_tests_passes_arguments_to_pytest(fake_repo):
    result = run(['bash', str(fake_repo / 'tools/run_tests.sh'), '-m', 'slow',
                  '-k', 'not parity'])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('setup ')
    assert lines[-8:] == ['-m', 'pytest', 'tests', '-q', '-m', 'slow', '-k',
                          'not parity']


@pytest.mark.parametrize('suite, runtime, status',
                         [(0, 0, 0), (1, 0, 1), (0, 1, 1)])
def test_ci_run_uses_shared_wheels_and_propagates_status(tmp_path, fake_repo,
                                                         suite, runtime,
                                                         status):
    """CI fails if the suite or the torch-free runtime tests fail; both run."""
    wheels = tmp_path / 'shared' / 'wheels'
    wheels.mkdir(parents=True)
    env = dict(os.environ, PIP_FIND_LINKS='/opt/machine-wheels',
               FAKE_PYTEST_STATUS=str(suite), FAKE_RUNTIME_STATUS=str(runtime))
    result = run(['bash', '.ci/run'], cwd=fake_repo, env=env)
    assert result.returncode == status, result.stderr
    lines = result.stdout.splitlines()
    # The CPU kind comes first, so a red run says which kind it ran on.
    assert re.fullmatch(r'\[ci\] CPU: .+, \d+ cores; flags:.*', lines[0]), lines[0]
    # The wheelhouse comes first; the machine's own find-links are kept.
    assert f'setup PIP_FIND_LINKS={wheels} /opt/machine-wheels' in lines
    assert 'runtime tests' in lines  # run even after a failed suite


def test_pytest_ini_skips_slow_by_default(tmp_path):
    shutil.copy(REPO_ROOT / 'pytest.ini', tmp_path)
    (tmp_path / 'tests').mkdir()
    (tmp_path / 'tests/test_marks.py').write_text(
        'import pytest\n\n'
        'def test_fast():\n    pass\n\n'
        '@pytest.mark.slow\ndef test_slow():\n    pass\n')
    command = [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
               '--strict-markers']
    default = run(command, cwd=tmp_path)
    assert default.returncode == 0, default.stdout
    assert '1 passed, 1 deselected' in default.stdout
    slow = run(command + ['-m', 'slow', '-v'], cwd=tmp_path)
    assert slow.returncode == 0, slow.stdout
    assert 'test_slow PASSED' in slow.stdout
    assert '1 passed, 1 deselected' in slow.stdout
