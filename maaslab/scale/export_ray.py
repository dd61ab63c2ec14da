"""A Ray Serve config file (`serve deploy` format) that runs MaaS Lab's server on a Ray cluster.

    OUT/serve_config.yaml   applications: [{name, route_prefix, import_path, args, deployments}]
    OUT/README.md

The application is maaslab.scale.ray_serve:app_builder, which builds the server's own routes
(OIP v2, OpenAI API, metrics) as Ray Serve deployments from `args`: the models, their replicas
or autoscaling range and the batching of each replica. So every model the server runs can go
here, language models included. `deployments` names each model's deployment (the builder names
them as the server names its models: a tensor model's replicas run its batcher, a language
model's the engine; mini-gpt is answered by the ingress and has none) with the CPUs a replica
reserves, the knob an operator tunes on the cluster without code.

The file is checked with Ray's own schema (ray.serve.schema.ServeDeploySchema, the pydantic
model `serve deploy` validates with), plus what that schema lets through: Ray ignores keys it
does not know, so a misspelt one is refused here, and `args` must hold exactly ARGS.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from maaslab.auto import shipped
from maaslab.errors import MaaslabError
from maaslab.scale.export_config import ExportConfig, Source, Written, write_readme

CONFIG_FILE = "serve_config.yaml"
IMPORT_PATH = "maaslab.scale.ray_serve:app_builder"
# The builder's arguments this export writes, with the types each takes.
ARGS = {
    "models": list,
    "replicas": int,
    "autoscale": (list, type(None)),
    "max_batch_size": int,
    "batch_timeout_ms": (int, float),
}
HTTP_HOST = "127.0.0.1"  # loopback, as the server binds by default; 0.0.0.0 opens it up
HTTP_PORT = 8000


def model_spec(source: Source) -> str:
    """The model as the builder's `models` takes it: a shipped name, or a folder's full path."""
    return source.name if shipped(source.name) else str(Path(source.name).resolve())


def _deployments(spec: str, config: ExportConfig) -> list[dict[str, Any]]:
    from maaslab.scale.ray_serve import deployed_separately
    from maaslab.serve.models import served_name

    if not deployed_separately(spec):  # mini-gpt: the ingress answers it
        return []
    return [{"name": served_name(spec), "ray_actor_options": {"num_cpus": config.replica_cpus}}]


def serve_config(source: Source, config: ExportConfig, name: str) -> dict[str, Any]:
    """The `serve deploy` config for `source` as the application `name`."""
    spec = model_spec(source)
    args = {
        "models": [spec],
        "replicas": config.replicas,
        "autoscale": list(config.autoscale) if config.autoscale else None,
        "max_batch_size": config.max_batch_size,
        "batch_timeout_ms": config.max_queue_delay_us / 1000,
    }
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": HTTP_HOST, "port": HTTP_PORT},
        "applications": [
            {
                "name": name,
                "route_prefix": "/",  # the server's own paths: /v2/..., /v1/..., /metrics
                "import_path": IMPORT_PATH,
                "args": args,
                "deployments": _deployments(spec, config),
            }
        ],
    }


def _unknown_keys(data: dict[str, Any], schema: type, where: str) -> None:
    unknown = sorted(set(data) - set(schema.model_fields))
    if unknown:
        raise MaaslabError(
            f"{where} has keys Ray Serve does not know ({', '.join(unknown)}); it would ignore "
            "them silently"
        )


def check_serve_config(doc: object) -> list[str]:
    """Validate a `serve deploy` config with Ray's ServeDeploySchema; the checks passed."""
    import pydantic
    from ray.serve.schema import (
        DeploymentSchema,
        HTTPOptionsSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    try:
        ServeDeploySchema.model_validate(doc)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MaaslabError(f"Ray's ServeDeploySchema refuses {where}: {first['msg']}") from None
    assert isinstance(doc, dict)
    _unknown_keys(doc, ServeDeploySchema, "the config")
    _unknown_keys(doc.get("http_options") or {}, HTTPOptionsSchema, "http_options")
    for app in doc["applications"]:
        _unknown_keys(app, ServeApplicationSchema, f"application {app.get('name')}")
        for deployment in app.get("deployments", []):
            where = f"deployment {deployment.get('name')}"
            _unknown_keys(deployment, DeploymentSchema, where)
            _unknown_keys(deployment.get("ray_actor_options") or {}, RayActorOptionsSchema, where)
        if app["import_path"] != IMPORT_PATH:
            continue
        args = app.get("args", {})
        if set(args) != set(ARGS):
            raise MaaslabError(f"args must hold {', '.join(ARGS)}; got {', '.join(args)}")
        for key, kind in ARGS.items():
            if isinstance(args[key], bool) or not isinstance(args[key], kind):
                raise MaaslabError(f"args.{key} has the wrong type: {args[key]!r}")
        if not args["models"] or not all(isinstance(m, str) and m for m in args["models"]):
            raise MaaslabError(f"args.models must list model names, got {args['models']!r}")
    return [
        f"{CONFIG_FILE} validates with Ray's ServeDeploySchema (what `serve deploy` checks), "
        "with no key Ray would ignore and the builder's args complete"
    ]


def write_bundle(
    source: Source, config: ExportConfig, name: str, staging: Path, final: Path
) -> Written:
    """The ray target: serve_config.yaml and README in `staging`."""
    from maaslab.serve.config import ScaleConfig

    # The replica bounds the server's Ray engine takes (the builder checks its args with it).
    ScaleConfig("ray", None if config.autoscale else config.replicas, config.autoscale)
    doc = serve_config(source, config, name)
    header = f"# Ray Serve config for {name} (python -m maaslab export): serve deploy this file.\n"
    path = staging / CONFIG_FILE
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    checks = check_serve_config(yaml.safe_load(path.read_text(encoding="utf-8")))
    command = f"serve deploy {shlex.quote(str(final / CONFIG_FILE))}"
    spec = doc["applications"][0]["args"]["models"][0]
    where = (
        f"the model folder at {spec} on every node"
        if spec.startswith("/")
        else f"the shipped {spec} (in maaslab's assets)"
    )
    scale = (
        f"autoscaling between {config.autoscale[0]} and {config.autoscale[1]} replicas"
        if config.autoscale
        else f"{config.replicas} replica(s)"
    )
    write_readme(
        staging,
        f"Ray Serve application: {name}",
        command,
        "a running Ray cluster (`ray start --head` on one machine, `ray start --address "
        "HEAD:6379` on the others) with this repository's requirements installed on every node, "
        f"and {where}. `serve deploy` talks to the head's dashboard (add `-a "
        "http://HEAD:8265` from another machine); `serve run` runs the same file in the "
        "foreground for a try on one machine.",
        f"MaaS Lab's own server on Ray Serve ({IMPORT_PATH}): {spec} with {scale}, batches of "
        f"up to {config.max_batch_size} rows waiting at most "
        f"{config.max_queue_delay_us / 1000:g} ms. The proxy listens on "
        f"http://{HTTP_HOST}:{HTTP_PORT} (set http_options.host to 0.0.0.0, behind API keys, to "
        "reach it from other machines), with the same routes as `python -m maaslab serve`: "
        "`GET /v2/models`, `POST /v2/models/<name>/infer`, the OpenAI API under /v1, /metrics.",
    )
    return Written(tuple(checks), command)
