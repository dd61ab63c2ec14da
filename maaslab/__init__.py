"""MaaS Lab: one backend for the app, the notebooks and the model server.

Everything that computes lives here; the faces (Streamlit pages, notebooks, the server) only read
inputs, call these functions and show the results.
"""

import os

# ONNX Runtime (1.32) sends usage events to Microsoft's servers from a background thread, tens of
# seconds after a session is made, unless this is set before it is first imported (its
# disable_telemetry_events() did not stop them here). MaaS Lab sends nothing anywhere; an
# explicit setting of the variable is kept. Child processes (servers, kernels) inherit it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from maaslab.errors import MaaslabError
from maaslab.runtime import fast_mode, scaled, seed_everything

__version__ = "0.1.0"

__all__ = ["MaaslabError", "__version__", "fast_mode", "scaled", "seed_everything"]
