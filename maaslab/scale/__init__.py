"""Scale-out (lesson 17): beyond one machine.

The layer directly above maaslab.serve: it reuses serve's routes, batching and model loading
and never copies them; serve never imports it.

- maaslab.scale.ray_serve: the same FastAPI app (OIP v2, OpenAI, explain, metrics) as a Ray
  Serve ingress, one Ray Serve deployment per tensor model with its own replicas and batching
  (`app_builder` for `serve run` / `serve deploy` config files).
- maaslab.scale.ray_cluster: a Ray instance for `python -m maaslab serve --engine ray`, a
  two-node cluster on loopback, where each replica runs (Ray's state API), and killing one.
- maaslab.scale.ray_status: the same replica and node rows read from outside the server, over
  the dashboard's HTTP state API (the Serve page's live view), and killing one replica.
- maaslab.scale.ray_autoscale: a step of load on an autoscaled deployment, the replica count
  Ray Serve follows and its reaction times.
- maaslab.scale.export: export bundles for Triton, KServe and Ray Serve (`export_bundle`).

Names are imported on first use, so `import maaslab.scale` costs nothing and needs no Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "app_builder": "maaslab.scale.ray_serve",
    "RayServeArgs": "maaslab.scale.ray_serve",
    "serve_on_ray": "maaslab.scale.ray_cluster",
    "replica_placement": "maaslab.scale.ray_cluster",
    "LocalCluster": "maaslab.scale.ray_cluster",
    "kill_replica": "maaslab.scale.ray_cluster",
    "step_response": "maaslab.scale.ray_autoscale",
    "cluster_status": "maaslab.scale.ray_status",
    "ReplicaRow": "maaslab.scale.ray_status",
    "export_bundle": "maaslab.scale.export",
    "ExportConfig": "maaslab.scale.export_config",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import `name` from its module the first time it is asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module 'maaslab.scale' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
