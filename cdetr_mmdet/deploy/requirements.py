"""Optional dependencies of the deploy path (the ``deploy`` extra)."""
import importlib
from types import ModuleType

INSTALL_HINT = "pip install -e '.[deploy]'"


def import_optional(name: str) -> ModuleType:
    """Import a package of the ``deploy`` extra or say how to install it.

    Args:
        name (str): Module name, e.g. ``'onnxruntime'``.

    Returns:
        ModuleType: The imported module.

    Raises:
        ImportError: Naming the package and the install command.
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f'{name} is not installed; it is part of the optional "deploy" '
            f'extra: run `{INSTALL_HINT}` in the repository root (or `pip '
            'install onnx onnxruntime openvino onnxscript`)') from err
