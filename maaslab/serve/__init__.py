"""The MaaS Lab model server: Open Inference Protocol v2, an OpenAI-compatible API, metrics.

`python -m maaslab serve` starts it; `create_app(ServeConfig(...))` builds the FastAPI app.
Names are imported on first use, so the CLI's parser does not pay for FastAPI and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "create_app": "maaslab.serve.app",
    "Batcher": "maaslab.serve.batching",
    "Overloaded": "maaslab.serve.batching",
    "RequestTimeout": "maaslab.serve.batching",
    "ServeConfig": "maaslab.serve.config",
    "ServedModel": "maaslab.serve.models",
    "load_models": "maaslab.serve.models",
    "serve": "maaslab.serve.runner",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import `name` from its module the first time it is asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module 'maaslab.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
