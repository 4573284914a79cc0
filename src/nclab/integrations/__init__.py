"""nclab inside the user's own training loop: a framework-free tracker and thin framework adapters.

    from nclab.track import CollapseTracker                      # plain PyTorch, no extra needed
    from nclab.integrations import NCLightningCallback           # pip install nclab[lightning]
    from nclab.integrations import NCTrainerCallback             # pip install nclab[hf]
    from nclab.integrations import TensorBoardLogger, MLflowLogger, WandbLogger

Every adapter imports its framework only when it is first used; a missing framework raises
:class:`MissingExtra` (an ``ImportError`` and an ``NclabError``) whose one line names the pip extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from nclab.utils.extras import MissingExtra, require

_LAZY = {
    "CollapseTracker": "nclab.integrations.track",
    "NCLightningCallback": "nclab.integrations.lightning",
    "NCTrainerCallback": "nclab.integrations.hf",
    "TensorBoardLogger": "nclab.integrations.loggers",
    "MLflowLogger": "nclab.integrations.loggers",
    "WandbLogger": "nclab.integrations.loggers",
    "build_loggers": "nclab.integrations.loggers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nclab.integrations' has no attribute {name!r}")


__all__ = ["MissingExtra", "require", *_LAZY]
