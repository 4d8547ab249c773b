"""tools/setup_env.sh as the README promises it: a second run installs nothing, a failing
step stops the set-up with its message and no stamp. Run in a copy of the scripts whose
venv is a logging stand-in (cdetr_testing.setup_copy): nothing is ever installed.
tools/run_demo.sh --quick runs in tests/test_demo.py (its module fixture)."""
import subprocess
import time
from pathlib import Path

from cdetr_testing.setup_copy import make_setup_copy, setup_env_vars, stamp_key

STAMP = Path('.venv') / '.cdetr_mmdet_setup'


def setup_env(repo: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(repo / 'tools' / 'setup_env.sh')], cwd=repo,
                          env=setup_env_vars(repo, **env), capture_output=True, text=True,
                          timeout=120)


def calls(repo: Path) -> list:
    """The stand-in interpreter's calls so far, then forget them."""
    log = repo / 'python_calls.log'
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_a_second_set_up_run_installs_nothing(tmp_path):
    repo = make_setup_copy(tmp_path / 'repo')
    first = setup_env(repo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert '[setup_env] torch 2.13.0 already installed' in first.stdout
    assert '[setup_env] mmcv 2.1.0 with compiled ops already installed' in first.stdout
    installs = [c for c in calls(repo) if c.startswith('-m pip install')]
    assert installs == ['-m pip install --disable-pip-version-check --upgrade pip',
                        '-m pip install --disable-pip-version-check wheel ninja',
                        "-m pip install --disable-pip-version-check --no-build-isolation "
                        "-e .[train,tests,deploy,int8]"]
    assert (repo / STAMP).read_text() == stamp_key(repo) + '\n'
    # Second run: the stamp matches and the packages' metadata is there (the real venv's).
    start = time.monotonic()
    second = setup_env(repo, STUB_INSTALLED='1')
    seconds = time.monotonic() - start
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout == f'[setup_env] {repo / ".venv"} is up to date; nothing to install\n'
    assert calls(repo) == ['-']  # the one metadata probe: no pip, no import of torch
    # README: "well under a second"; generous here, the test machine may be loaded.
    assert seconds < 15, seconds
    # A changed TORCH_SPEC is another set-up: the stamp no longer matches.
    third = setup_env(repo, STUB_INSTALLED='1', TORCH_SPEC='torch==2.13.0')
    assert '[setup_env] installing torch==2.13.0 (TORCH_SPEC)' in third.stdout
    assert (repo / STAMP).read_text() == stamp_key(repo, 'torch==2.13.0') + '\n'


def test_a_failing_install_stops_the_set_up_with_its_message(tmp_path):
    repo = make_setup_copy(tmp_path / 'repo', stamped=True)
    out = setup_env(repo, STUB_INSTALLED='1', TORCH_SPEC='torch==9.9.9',
                    STUB_FAIL_ON='torch==9.9.9')
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1] == '[setup_env] installing torch==9.9.9 (TORCH_SPEC)'
    assert out.stderr.splitlines()[-1] == (
        'ERROR: No matching distribution found for torch==9.9.9')
    assert not (repo / STAMP).exists()  # the old stamp went: the next run starts over
    assert not any('mmcv' in c or '-e .' in c for c in calls(repo))  # no later step ran


def test_mmcv_without_compiled_ops_stops_the_set_up(tmp_path):
    repo = make_setup_copy(tmp_path / 'repo')
    out = setup_env(repo, STUB_MMCV_OPS='0')
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1] == (
        "[setup_env] ERROR: mmcv installed but 'import mmcv._ext' fails (built for another "
        "torch?)")
    assert '[setup_env] installed mmcv==2.1.0 from a wheel' in out.stdout
    assert not (repo / STAMP).exists()
    assert not any('-e .' in c for c in calls(repo))


def test_a_missing_python_stops_the_set_up(tmp_path):
    repo = make_setup_copy(tmp_path / 'repo', with_venv=False)
    out = setup_env(repo, PYTHON=str(tmp_path / 'no-such-python3'))
    assert out.returncode == 127
    assert out.stdout == f'[setup_env] creating virtualenv {repo / ".venv"}\n'
    assert f'{tmp_path / "no-such-python3"}: No such file or directory' in out.stderr
    assert not (repo / '.venv').exists()
