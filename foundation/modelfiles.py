"""The model directory: one checkpoint file per model plus ``manifest.json``.

A checkpoint is a dict of state_dicts, the typed config it was built from, the preprocessing
it expects and the schema it was trained on; it is loaded with ``weights_only=True`` and no
module is ever pickled. A model trained on one schema refuses to load with another.
``Preprocess.from_saved`` turns the saved preprocessing back into the callable a model's
``load`` returns; ``config_differences`` names the settings two configs disagree on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation.atomic import atomic_write
from foundation.schema import Schema, default_schema

if TYPE_CHECKING:
    import torch
    from PIL import Image

MANIFEST = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"


class ModelError(ValueError):
    """A model file that is missing, corrupt or made for another schema."""


def _list(values) -> list[float] | None:
    return None if values is None else list(values)


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing saved with a model, as a callable: PIL image -> float tensor (3, H, W).

    The image is made RGB, squashed to ``image_size`` x ``image_size`` (bilinear) unless that is
    None (the model resizes itself), scaled to [0, 1] and, with ``mean`` and ``std``, normalised.
    """

    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"preprocess image_size must be at least 1, got {self.image_size!r}")
        if (self.mean is None) != (self.std is None) or any(
            v is not None and len(v) != 3 for v in (self.mean, self.std)
        ):
            raise ValueError(
                f"preprocess needs both or neither of mean and std, 3 values each; got {self.mean}, {self.std}"
            )

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any]) -> Preprocess:
        """From a checkpoint's ``preprocessing`` dict (other keys there are the model's business)."""
        resize = saved.get("resize", "squash" if "image_size" in saved else "none")
        if resize not in ("squash", "none"):
            raise ModelError(f"unknown resize {resize!r} in a model's preprocessing; known: squash, none")
        mean, std = saved.get("mean"), saved.get("std")
        return cls(
            image_size=int(saved["image_size"]) if resize == "squash" else None,
            mean=tuple(map(float, mean)) if mean is not None else None,
            std=tuple(map(float, std)) if std is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The form checkpoints save (``from_saved`` reads it back)."""
        if self.image_size is None:
            return {"resize": "none", "mean": _list(self.mean), "std": _list(self.std)}
        return {"image_size": self.image_size, "resize": "squash", "mean": _list(self.mean), "std": _list(self.std)}

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image

        image = image.convert("RGB")
        if self.image_size is not None:
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1).float().div_(255)
        if self.mean is not None:
            x = (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        return x

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, S, S) of a list of images (each squashed to the same size)."""
        import torch

        if self.image_size is None:
            raise ValueError("images of their own sizes do not stack into a batch; call the preprocess on each")
        return torch.stack([self(im) for im in images])


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (a dump, say), to record what a model was trained on."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def dumps_hash(dumps: Sequence[str | Path]) -> str:
    """A dump's file hash; of several, a hash of their hashes in order."""
    hashes = [file_hash(d) for d in dumps]
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256(" ".join(hashes).encode()).hexdigest()[:16]


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """``"name: <saved> there, <current> here"`` for each setting that differs (nested names dotted)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif _plain(a) != _plain(b):  # a tuple saved is the same setting as a list
            out.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return out


def read_manifest(models_dir: str | Path) -> dict:
    path = Path(models_dir) / MANIFEST
    if not path.is_file():
        return {"models": {}}
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ModelFile:
    """What a checkpoint holds besides its schema: the weights and what rebuilds and feeds the model.

    ``state_dicts``: name -> state_dict; ``config``: the typed config as a dict; ``preprocessing``:
    what ``Preprocess.from_saved`` (and the model's own ``load``) reads; ``extra``: anything else
    the model's ``load`` needs back (a training run's position, say).
    """

    state_dicts: dict[str, dict]
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    extra: dict[str, Any] | None = None


def save_model(
    models_dir: str | Path,
    name: str,
    contents: ModelFile,
    *,
    schema: Schema | None = None,
    metrics: dict[str, Any] | None = None,
    data_hash: str | None = None,
) -> Path:
    """Write ``<models_dir>/<name>.pt`` atomically and record it in the manifest."""
    import torch

    schema = schema or default_schema()
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.pt"
    checkpoint = {
        "name": name,
        "state_dicts": contents.state_dicts,
        "config": contents.config,
        "preprocessing": contents.preprocessing,
        "schema": schema.to_dict(),
        "schema_fingerprint": schema.fingerprint,
        "extra": contents.extra or {},
    }
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
    with _manifest_lock(models_dir):
        _record(models_dir, name, path, contents.config, schema, {"data_hash": data_hash, "metrics": metrics or {}})
    return path


@contextlib.contextmanager
def _manifest_lock(models_dir: Path) -> Iterator[None]:
    """Held while the manifest is read, changed and written: two trainings saving into one models
    directory at once (the demo trains two models side by side) each keep the other's entry."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): one training a directory at a time
        yield
        return
    with open(models_dir / MANIFEST_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _record(models_dir: Path, name: str, path: Path, config: dict, schema: Schema, run: dict) -> None:
    """``name``'s manifest entry (``run``: its data hash and metrics), written atomically."""
    import torch
    import torchvision

    manifest = read_manifest(models_dir)
    manifest["models"][name] = {
        "file": path.name,
        "schema_fingerprint": schema.fingerprint,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        **run,
        "config": config,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write(models_dir / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_model(models_dir: str | Path, name: str, *, schema: Schema | None = None) -> dict:
    """The checkpoint dict of model ``name``; a clear error when missing or for another schema."""
    import torch

    schema = schema or default_schema()
    path = Path(models_dir) / f"{name}.pt"
    if not path.is_file():
        raise ModelError(f"no {name} model at {path}: train it with `fashion-search train {name}`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise ModelError(f"cannot read the {name} model {path}: {exc}") from exc
    if checkpoint.get("schema_fingerprint") != schema.fingerprint:
        raise ModelError(
            f"the {name} model {path} was trained on attribute schema {checkpoint.get('schema_fingerprint')}, "
            f"but this schema is {schema.fingerprint} ({schema.source}): retrain it or use the schema it was trained on"
        )
    return checkpoint
