"""cdetr_mmdet: Conditional DETR as registered MMDetection 3.x modules."""
import importlib.util

# The base install is torch-free (setup.py): say which extra brings the rest.
_missing = [name for name in ('torch', 'mmengine', 'mmcv', 'mmdet')
            if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f'cdetr_mmdet needs {", ".join(_missing)} (not installed): run `bash '
        "tools/setup_env.sh` (torch, mmcv with its ops, then pip install -e "
        "'.[train,tests,deploy,int8]'), or install torch and mmcv 2.1.0 "
        "first and then pip install -e '.[train]'. To run exported models "
        "without them use cdetr_runtime (pip install '.[runtime]').")
from . import data, evaluation  # noqa: F401  (register the dataset, transform, hook, metric)
from . import engine  # noqa: F401  (registers the wrappers and hooks)
from .checkpoint import register_safe_globals, register_safe_local_loader
from .models import *  # noqa: F401,F403  (registers the modules)
from .models import __all__ as _models_all
from .version import __version__

# Checkpoints saved by mmengine must load under torch's weights_only=True.
register_safe_globals()
# ... and a refused one fails with our message, on every loading path.
register_safe_local_loader()

__all__ = ['__version__', 'register_safe_globals', *_models_all]
