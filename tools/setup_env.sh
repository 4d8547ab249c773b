#!/usr/bin/env bash
# Create or refresh the project's virtualenv at <repo>/.venv (idempotent).
#
#   bash tools/setup_env.sh
#
# Steps, each skipped when already done:
#   1. python3 -m venv .venv (PYTHON=... picks another interpreter);
#   2. pip, wheel, ninja;
#   3. torch: TORCH_SPEC if given, else torch==2.13.0 unless a torch imports;
#   4. mmcv 2.1.0 with its compiled ops: a wheel if pip finds one (e.g. in a
#      wheelhouse given by PIP_FIND_LINKS), else built from source with
#      setuptools<70 (~15 min once on 2 cores; pip caches the built wheel);
#   5. pip install -e '.[train,tests,deploy,int8]' (train: mmengine, mmdet
#      and co., the plugin's stack; deploy: ONNX export and runners; int8:
#      NNCF, for tools/export_onnx.py --int8).
# A stamp in .venv, keyed on setup.py, this script and TORCH_SPEC, makes a
# re-run with nothing to do take well under a second.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.cdetr_mmdet_setup"
DEFAULT_TORCH_SPEC='torch==2.13.0'
MMCV_SPEC='mmcv==2.1.0'

log() { echo "[setup_env] $*"; }

start=$SECONDS
cd "$REPO_ROOT"

if [[ ! -x "$PY" ]]; then
    log "creating virtualenv $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi

stamp_key="$(cat setup.py tools/setup_env.sh | sha256sum | cut -d' ' -f1) torch=${TORCH_SPEC:-}"
installed_ok() {  # cheap: package metadata only, no torch import
    "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as metadata
for name in ('torch', 'mmcv', 'mmengine', 'mmdet', 'cdetr_mmdet'):
    metadata.version(name)
EOF
}
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$stamp_key" ]] && installed_ok; then
    log "$VENV is up to date; nothing to install"
    exit 0
fi
rm -f "$STAMP"

pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }

# A PIP_FIND_LINKS given by hand replaces the find-links of pip's config
# files (on these machines: the folder with the CPU torch wheel): keep both.
if [[ -n "${PIP_FIND_LINKS:-}" ]]; then
    for link in $("$PY" -m pip config get global.find-links 2>/dev/null || true); do
        [[ " $PIP_FIND_LINKS " == *" $link "* ]] || PIP_FIND_LINKS+=" $link"
    done
    export PIP_FIND_LINKS
    log "PIP_FIND_LINKS=$PIP_FIND_LINKS"
fi

log "upgrading pip; installing wheel, ninja"
pip_install --upgrade pip
pip_install wheel ninja

if [[ -n "${TORCH_SPEC:-}" ]]; then
    log "installing $TORCH_SPEC (TORCH_SPEC)"
    pip_install "$TORCH_SPEC"
elif "$PY" -c 'import torch' 2>/dev/null; then
    log "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
else
    log "installing $DEFAULT_TORCH_SPEC"
    pip_install "$DEFAULT_TORCH_SPEC"
fi

# mmdet imports mmcv.ops at module level: mmcv-lite (no mmcv._ext) is not enough.
mmcv_ok() {
    "$PY" -c 'import torch, mmcv, mmcv._ext; assert mmcv.__version__ == "2.1.0"' 2>/dev/null
}
if mmcv_ok; then
    log "mmcv 2.1.0 with compiled ops already installed"
else
    # e.g. mmcv-lite, another version, or ops built for another torch
    "$PY" -m pip uninstall -y -q mmcv mmcv-lite 2>/dev/null || true
    log "looking for a prebuilt $MMCV_SPEC wheel"
    if pip_install --only-binary=mmcv "$MMCV_SPEC"; then
        log "installed $MMCV_SPEC from a wheel"
    else
        log "no $MMCV_SPEC wheel found (the error above is expected without a wheelhouse)"
        log "building $MMCV_SPEC from source against the installed torch"
        log "NOTE: this takes about 15 minutes on 2 cores, once (pip caches the built wheel)"
        # mmcv's setup.py imports pkg_resources, gone from setuptools >= 70
        # (torch's own requirement, setuptools>=77, is restored below).
        pip_install 'setuptools<70'
        # --no-build-isolation: build against this venv's torch; an isolated
        # build would fetch its own (CUDA) torch.
        MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
            pip_install --no-build-isolation "$MMCV_SPEC"
    fi
    if ! mmcv_ok; then
        log "ERROR: mmcv installed but 'import mmcv._ext' fails (built for another torch?)"
        exit 1
    fi
fi

log "installing cdetr_mmdet (editable) with the train, tests, deploy and int8 extras"
pip_install --no-build-isolation -e '.[train,tests,deploy,int8]'

echo "$stamp_key" > "$STAMP"
log "done in $((SECONDS - start)) s; activate with: . .venv/bin/activate"
