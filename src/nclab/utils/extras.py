"""Optional frameworks: import them on demand, or fail with one line that names the pip extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from nclab.utils.errors import NclabError

# module to import -> (pip extra, what it is for)
EXTRAS = {
    "lightning": ("lightning", "NCLightningCallback"),
    "transformers": ("hf", "NCTrainerCallback"),
    "torch.utils.tensorboard": ("tensorboard", "TensorBoardLogger"),
    "tensorboard": ("tensorboard", "TensorBoardLogger"),
    "mlflow": ("mlflow", "MLflowLogger"),
    "wandb": ("wandb", "WandbLogger"),
}


class MissingExtra(NclabError, ImportError):
    """An optional framework is not installed (the CLI prints the line and exits 2)."""


def require(module: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtra` naming ``pip install nclab[<extra>]``."""
    extra, what = EXTRAS.get(module, EXTRAS.get(module.split(".")[0], (module, module)))
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{what} needs {module.split('.')[0]} ({e.name or module} is not installed); "
                           f"install it with: pip install nclab[{extra}]") from None
