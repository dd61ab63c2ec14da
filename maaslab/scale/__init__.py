"""Scale-out (lesson 17): beyond one machine.

- `maaslab.scale.ray_serve`: the same routes served on Ray Serve (`app_builder` for `serve deploy`).
- `maaslab.scale.export`: export bundles for Triton, KServe and Ray Serve (`export_bundle`).
"""
