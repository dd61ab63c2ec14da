"""MaaS Lab: one backend for the app, the notebooks and the model server.

Everything that computes lives here; the faces (Streamlit pages, notebooks, the server) only read
inputs, call these functions and show the results.
"""

from maaslab.errors import MaaslabError
from maaslab.runtime import fast_mode, scaled, seed_everything

__version__ = "0.1.0"

__all__ = ["MaaslabError", "__version__", "fast_mode", "scaled", "seed_everything"]
