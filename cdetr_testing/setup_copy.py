"""A copy of the repository's set-up scripts whose venv is a logging stand-in.

``tools/setup_env.sh`` and ``tools/run_demo.sh`` install into ``<repo>/.venv``: run
against the real checkout they could reinstall the shared environment. The tests run
them in a copy (``tools/setup_env.sh``, ``tools/run_demo.sh`` and ``setup.py``, which
key the stamp; ``tools/demo.py`` linked, so the demo runs the real code) whose
``.venv/bin/python`` is a shell stand-in: it logs every call, answers the set-up's pip
and import probes as the environment variables below say, never installs anything, and
hands every other command (the stamp's metadata probe, ``tools/demo.py``) to the real
interpreter, which only reads.

- ``STUB_INSTALLED=1``: the metadata probe runs for real (else: packages missing);
- ``STUB_FAIL_ON=SPEC``: ``pip install`` of ``SPEC`` fails as pip does without a match;
- ``STUB_MMCV_OPS=0``: ``import mmcv._ext`` fails.
"""
import hashlib
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[1]

STUB = r'''#!/usr/bin/env bash
printf '%s\n' "$*" >> "$STUB_LOG"
case "$*" in
    -) [[ "${STUB_INSTALLED:-0}" == 1 ]] && exec "$REAL_PYTHON" "$@"; exit 1 ;;
    "-m pip config get"*) exit 1 ;;
    "-m pip uninstall"*) exit 0 ;;
    "-m pip install"*)
        if [[ -n "${STUB_FAIL_ON:-}" && " $* " == *" $STUB_FAIL_ON "* ]]; then
            echo "ERROR: No matching distribution found for $STUB_FAIL_ON" >&2; exit 1
        fi
        echo "stub pip: $*"; exit 0 ;;
    "-m pip"*) echo "stub python: unexpected pip call: $*" >&2; exit 99 ;;
    "-c import torch") exit 0 ;;
    "-c import torch; print(torch.__version__)") echo 2.13.0; exit 0 ;;
    "-c import torch, mmcv, mmcv._ext"*) [[ "${STUB_MMCV_OPS:-1}" == 1 ]]; exit $? ;;
esac
exec "$REAL_PYTHON" "$@"
'''


def stamp_key(repo: Path, torch_spec: str = '') -> str:
    """What ``tools/setup_env.sh`` writes to its stamp after a complete set-up."""
    digest = hashlib.sha256((repo / 'setup.py').read_bytes() +
                            (repo / 'tools' / 'setup_env.sh').read_bytes()).hexdigest()
    return f'{digest} torch={torch_spec}'


def make_setup_copy(dest: Path, with_venv: bool = True, stamped: bool = False) -> Path:
    """Copy the scripts to ``dest``; ``with_venv``: the stand-in venv; ``stamped``: as after
    a complete set-up. Returns ``dest``."""
    (dest / 'tools').mkdir(parents=True)
    for name in ('tools/setup_env.sh', 'tools/run_demo.sh', 'setup.py'):
        shutil.copy(ROOT / name, dest / name)
    (dest / 'tools' / 'demo.py').symlink_to(ROOT / 'tools' / 'demo.py')
    if with_venv:
        python = dest / '.venv' / 'bin' / 'python'
        python.parent.mkdir(parents=True)
        python.write_text(STUB)
        python.chmod(python.stat().st_mode | stat.S_IXUSR)
        if stamped:
            (dest / '.venv' / '.cdetr_mmdet_setup').write_text(stamp_key(dest) + '\n')
    return dest


def setup_env_vars(dest: Path, **overrides: str) -> Dict[str, str]:
    """The environment for a run in the copy: the stand-in's log and the real interpreter."""
    env = dict(os.environ, STUB_LOG=str(dest / 'python_calls.log'),
               REAL_PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    for name in ('TORCH_SPEC', 'PIP_FIND_LINKS', 'PYTHON'):
        env.pop(name, None)
    env.update(overrides)
    return env
