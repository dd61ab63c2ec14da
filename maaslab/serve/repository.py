"""A model repository on disk, Triton-style: `<root>/<name>/<version>/`, each a model folder.

TorchServe's ShellTorch CVEs came from a management API that registered models from URLs a
request supplied. Here a request may name a model and a version, and this module is the only
place such a name becomes a path, so it accepts only plain folder names (`check_name`) and
positive integer versions (`check_version`) and refuses the rest with a message: URLs, absolute
paths, separators, "..", NUL. A symlink is followed only when it stays inside the repository,
so a link cannot lend the server a folder nobody put there.

    models/                 <- ModelRepository("models")
      digits/
        1/  config.json  model.safetensors      <- folder("digits", "1")
        2/  config.json  model.safetensors

`index()` lists every model and version with a READY / UNAVAILABLE state and a reason, in the
style of the Open Inference Protocol's repository extension. `init_demo_repository` writes a
two-version demo (digits-mlp as version 1, digits-cnn as version 2) for the canary lesson.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from maaslab.errors import MaaslabError
from maaslab.registry import CONFIG_FILE, WEIGHTS_FILE, atomic_folder, read_config
from maaslab.zoo import shipped_folder

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a folder name, nothing more
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,8}")  # 1 .. 999999999, no leading zeros
# "http:", "file:", "s3:" ... : a scheme means someone wants the server to fetch something.
SCHEME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# The demo: version 2 is a different, better model replacing version 1 (the canary story).
DEMO_VERSIONS = (("1", "digits-mlp"), ("2", "digits-cnn"))
DEMO_MODEL = "digits"
README = """# Model repository

One folder per model, one numbered folder per version, each a model folder:

    <name>/<version>/config.json
    <name>/<version>/model.safetensors

Names are letters, digits, '.', '_' and '-' (up to 64 characters, starting with a letter or a
digit); versions are positive integers without leading zeros (1, 2, 10...). A version folder may
be a symlink only to a folder inside this repository.

This demo holds `digits/1` (the shipped digits-mlp) and `digits/2` (the shipped digits-cnn):
serve version 1 as champion and try version 2 as a canary or in shadow mode.
"""


class NotInRepository(MaaslabError):
    """A well-formed model name or version that the repository does not hold: a 404."""

    status = 404


def check_name(name: str) -> str:
    """Return `name` if it is a plain model folder name; otherwise say why it is refused."""
    if not isinstance(name, str) or not name:
        raise MaaslabError("the model name is empty: give the name of a folder in the repository")
    if "\x00" in name:
        raise MaaslabError("the model name contains a NUL character: give a plain folder name")
    if "://" in name or SCHEME_PATTERN.match(name):
        raise MaaslabError(
            f"refusing model name {name!r}: models load only from the server's repository, "
            "never from a URL; copy the model folder into the repository and give its name"
        )
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        raise MaaslabError(
            f"refusing model name {name!r}: it is an absolute path; give the name of a folder "
            "inside the repository"
        )
    if ".." in name:
        raise MaaslabError(
            f"refusing model name {name!r}: '..' could leave the repository; give the name of a "
            "folder inside it"
        )
    if "/" in name or "\\" in name:
        raise MaaslabError(
            f"refusing model name {name!r}: a name is one folder, without '/' or '\\'; pick the "
            "version with the version field, not a sub-path"
        )
    if not NAME_PATTERN.fullmatch(name):
        raise MaaslabError(
            f"refusing model name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return name


def check_version(version: str) -> str:
    """Return `version` if it is a positive integer string without leading zeros (<= 9 digits)."""
    if not isinstance(version, str) or not version:
        raise MaaslabError("the version is empty: give a positive integer such as 1 or 2")
    if VERSION_PATTERN.fullmatch(version):
        return version
    if version.isascii() and version.isdigit():
        if int(version) == 0:
            raise MaaslabError("version 0 does not exist: versions count from 1")
        if version.startswith("0"):
            raise MaaslabError(
                f"version {version!r} has a leading zero: write {int(version)} (one folder per "
                "version, so 01 and 1 must not both be possible)"
            )
        raise MaaslabError(f"version {version!r} is too long: use at most 9 digits")
    raise MaaslabError(
        f"refusing version {version[:40]!r}: a version is a positive integer such as 1 or 2"
    )


def _is_name(name: str) -> bool:
    try:
        check_name(name)
    except MaaslabError:
        return False
    return True


def _version_names(folder: Path) -> list[str]:
    """The entries of a model folder named like versions, sorted numerically (2 before 10)."""
    found = [p.name for p in folder.iterdir() if VERSION_PATTERN.fullmatch(p.name)]
    return sorted(found, key=int)


class ModelRepository:
    """The models under one root folder: list them, and turn a checked name + version into a
    folder that is inside the root."""

    def __init__(self, root: str | Path) -> None:
        path = Path(root)
        if not path.exists():
            raise MaaslabError(
                f"model repository {path} does not exist: create it with one <name>/<version>/ "
                "model folder per version (init_demo_repository writes a demo)"
            )
        if not path.is_dir():
            raise MaaslabError(f"model repository {path} is a file: give a folder")
        self.root = path.resolve(strict=True)  # every path handed out must stay under it

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def _inside(self, path: Path) -> bool:
        # Strictly below the root: a link to the root itself would make models of versions.
        return self.root in path.parents

    def names(self) -> list[str]:
        """The model folders under the root whose names are valid, sorted."""
        entries = (p for p in self.root.iterdir() if p.is_dir() or p.is_symlink())
        return sorted(p.name for p in entries if _is_name(p.name))

    def _model_folder(self, name: str) -> Path:
        """<root>/<name>, resolved, after checking the name and where a symlink leads."""
        path = self.root / check_name(name)
        if not path.exists() and not path.is_symlink():
            known = ", ".join(self.names()) or "none"
            raise NotInRepository(
                f"no model {name!r} in the repository {self.root}: it holds {known}"
            )
        resolved = path.resolve()
        if not self._inside(resolved):
            raise MaaslabError(
                f"model {name!r}: symlink leads outside the repository (to {resolved}); copy "
                f"the model into {self.root} instead"
            )
        if not resolved.is_dir():
            raise MaaslabError(f"model {name!r} in {self.root} is not a folder")
        return resolved

    def _version_folder(self, name: str, version: str, path: Path) -> Path:
        """A version folder, resolved, after checking where it leads and what it holds."""
        label = f"{name}/{version}"
        resolved = path.resolve()
        if not self._inside(resolved):
            raise MaaslabError(
                f"version {label}: symlink leads outside the repository (to {resolved}); copy "
                f"the model folder into {self.root} instead"
            )
        if not resolved.is_dir():
            raise MaaslabError(
                f"version {label} is not a folder: make it a model folder "
                f"({CONFIG_FILE} + {WEIGHTS_FILE})"
            )
        for file in (CONFIG_FILE, WEIGHTS_FILE):
            inner = resolved / file
            if inner.exists() and not self._inside(inner.resolve()):
                raise MaaslabError(
                    f"version {label}: {file} is a symlink that leads outside the repository; "
                    "copy the file into the version folder instead"
                )
        if not (resolved / CONFIG_FILE).is_file():
            raise MaaslabError(
                f"version {label} has no {CONFIG_FILE}: a version folder is a model folder "
                f"({CONFIG_FILE} + {WEIGHTS_FILE}) as written by save_model"
            )
        read_config(resolved)  # weights present, no pickle, valid JSON naming a model_type
        return resolved

    def versions(self, name: str) -> dict[str, Path]:
        """Version -> resolved folder for model `name`, sorted numerically; entries whose names
        are not versions are skipped, a bad version folder is refused."""
        folder = self._model_folder(name)
        return {v: self._version_folder(name, v, folder / v) for v in _version_names(folder)}

    def folder(self, name: str, version: str) -> Path:
        """The resolved folder of one version of model `name`, with the same checks."""
        folder = self._model_folder(name)
        path = folder / check_version(version)
        if not path.exists() and not path.is_symlink():
            known = ", ".join(_version_names(folder)) or "none"
            raise NotInRepository(f"model {name!r} has no version {version}: it has {known}")
        return self._version_folder(name, version, path)

    def index(self) -> list[dict[str, str]]:
        """Every model and version found, READY or UNAVAILABLE with the reason, never raising
        for one bad entry (the OIP repository extension's index)."""
        entries: list[dict[str, str]] = []
        for name in self.names():
            try:
                folder = self._model_folder(name)
                versions = _version_names(folder)
            except (MaaslabError, OSError) as err:
                entries.append(_entry(name, "", str(err)))
                continue
            if not versions:
                reason = f"model {name!r} has no version folders (1, 2, ...)"
                entries.append(_entry(name, "", reason))
            for version in versions:
                try:
                    self._version_folder(name, version, folder / version)
                except (MaaslabError, OSError) as err:
                    entries.append(_entry(name, version, str(err)))
                else:
                    entries.append(_entry(name, version, ""))
        return entries


def _entry(name: str, version: str, reason: str) -> dict[str, str]:
    state = "UNAVAILABLE" if reason else "READY"
    return {"name": name, "version": version, "state": state, "reason": reason}


def publish(root: str | Path, name: str, source: str | Path) -> str:
    """Copy the model folder `source` into the repository as the next version of `name`
    (1 for a new name); the version written. The copy appears whole or not at all, so a
    server's load never sees half a model; a running server serves it after a load call."""
    repository = ModelRepository(root)
    check_name(name)
    source = Path(source)
    if not (source / "config.json").is_file():
        raise MaaslabError(f"{source} is not a model folder: it has no config.json")
    folder = repository.root / name
    taken = [int(v) for v in _version_names(folder)] if folder.is_dir() else []
    version = str(max(taken, default=0) + 1)
    folder.mkdir(exist_ok=True)
    with atomic_folder(folder / version) as staging:
        for file in sorted(source.iterdir()):
            if file.is_file():
                shutil.copyfile(file, staging / file.name)
    return version


def init_demo_repository(
    root: str | Path, *, force: bool = False, versions: int = len(DEMO_VERSIONS)
) -> ModelRepository:
    """Write the demo repository: digits/1 = digits-mlp, digits/2 = digits-cnn, and a README.

    Parameters
    ----------
    root : the repository folder; created if missing, refused if not empty unless `force`.
    force : overwrite the demo's versions and README in a non-empty folder (other files stay).
    versions : how many of the demo's versions to write (1: the MLP alone, so that the CNN can
        be published later as version 2 with `publish(root, "digits", ...)`, the rollout story).
    """
    if not 1 <= versions <= len(DEMO_VERSIONS):
        raise MaaslabError(f"the demo has versions 1..{len(DEMO_VERSIONS)}, not {versions}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise MaaslabError(f"{root} is a file: give a folder for the model repository")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise MaaslabError(
            f"{root} is not empty: choose an empty or new folder, or pass force to overwrite "
            "its demo models"
        )
    root.mkdir(parents=True, exist_ok=True)
    for version, shipped in DEMO_VERSIONS[:versions]:
        source = shipped_folder(shipped)
        # Copies, not links: the repository must not change when assets/models is rebuilt,
        # and each version appears whole or not at all (atomic_folder stages it beside).
        with atomic_folder(root / DEMO_MODEL / version, overwrite=force) as staging:
            for file in sorted(source.iterdir()):
                if file.is_file():
                    shutil.copyfile(file, staging / file.name)
    staging_readme = root / ".README.md.saving"
    staging_readme.write_text(README, encoding="utf-8")
    os.replace(staging_readme, root / "README.md")
    return ModelRepository(root)
