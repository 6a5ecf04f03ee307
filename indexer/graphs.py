"""The ONNX Runtime graphs of a models directory: all three exported by one call, copied with the models.

Each model package says which part of its network runs on ONNX Runtime and exports it
(``appearance.model``, ``attributes.predict``, ``detector.predict``); ``indexer.stem`` adds the
stages the two crop readers share, where they share some. ``foundation.runtime`` caches the graphs
in ``<models>/onnx/`` under the hash of the ``.pt`` they come from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from foundation.atomic import atomic_copy
from foundation.runtime import Graph
from foundation.schema import Schema

logger = logging.getLogger(__name__)

MODELS = ("appearance", "attributes", "detector")  # the cheapest first


def graphs_of(name: str) -> tuple[Graph, ...]:
    """The parts of model ``name`` that run on ONNX Runtime."""
    from indexer import stem

    if name == "appearance":
        from appearance.model import ONNX_GRAPH

        return (ONNX_GRAPH, stem.APPEARANCE_GRAPH)
    if name == "attributes":
        from attributes.predict import encoder_graph

        return (encoder_graph(), stem.PREFIX_GRAPH, stem.ATTRIBUTES_GRAPH)
    if name == "detector":
        from detector.predict import GRAPHS

        return GRAPHS
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def calibration_photos(dump: str | Path, n: int) -> list:
    """The first ``n`` readable photos of ``dump`` (a product's first), prepared as indexing prepares them."""
    from foundation.dump import read_dump
    from foundation.images import ImageError
    from indexer.prepare import prepare_image

    if n < 1:
        raise ValueError(f"the calibration needs at least one photo, got {n}")
    photos = []
    for product in read_dump(dump, check_images=False):
        if not product.photos:
            continue
        try:
            photos.append(prepare_image(product.photos[0].path, thumbnail=False).image)
        except ImageError as exc:
            logger.warning("calibration: %s left out: %s", product.photos[0].path, exc)
        if len(photos) == n:
            break
    if not photos:
        raise ValueError(f"no readable photo in {dump} to calibrate the int8 graphs on")
    return photos


def export_graphs(
    models_dir: str | Path,
    *,
    models: Sequence[str] = MODELS,
    schema: Schema | None = None,
    force: bool = False,
    calibration: Sequence = (),
) -> dict[str, dict]:
    """Export each model's graphs into ``models_dir/onnx`` (kept when the model file is unchanged,
    unless ``force``). With ``calibration`` photos, the int8 graphs calibrated on them too (the
    detector's backbone), exported again each time. Returns, per model, its graphs' paths, whether
    they were exported now, and the seconds taken."""
    from appearance.model import export_onnx as export_appearance
    from attributes.predict import export_onnx as export_attributes
    from detector.predict import export_onnx as export_detector

    exporters = {"appearance": export_appearance, "attributes": export_attributes, "detector": export_detector}
    out = {}
    for name in models:
        graphs = graphs_of(name)
        t0 = time.perf_counter()
        calibrated = bool(calibration) and any(g.calibrated for g in graphs)
        required = [g for g in graphs if not (g.calibrated or g.optional)]
        exported = force or calibrated or not all(g.path(models_dir).is_file() for g in required)
        if exported:
            extra = {"calibration": calibration} if calibrated else {}
            exporters[name](models_dir, schema=schema, **extra)
        out[name] = {
            "graphs": [str(g.path(models_dir)) for g in graphs if g.path(models_dir).is_file()],
            "exported": exported,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    if {"attributes", "appearance"} <= set(models):
        out["stem"] = _export_stem(models_dir, schema, force)
    return out


def _export_stem(models_dir: str | Path, schema: Schema | None, force: bool) -> dict:
    """The crop readers' shared stages and each one's rest as graphs (``indexer.stem``), where the
    torch models share stages."""
    from appearance.model import AppearanceCoder
    from attributes.predict import AttributePredictor
    from indexer import stem

    t0 = time.perf_counter()
    paths = [g.path(models_dir) for g in stem.GRAPHS]
    exported = force or not all(p.is_file() for p in paths)
    if exported:
        predictor = AttributePredictor.load(models_dir, schema=schema)
        paths = stem.export_stem(models_dir, predictor, AppearanceCoder.load(models_dir, schema=schema))
    return {"graphs": [str(p) for p in paths], "exported": exported, "seconds": round(time.perf_counter() - t0, 1)}


def current_graphs(models_dir: str | Path) -> list[Path]:
    """The graphs cached for the model files ``models_dir`` holds now."""
    paths = []
    for name in MODELS:
        if (Path(models_dir) / f"{name}.pt").is_file():
            paths += [p for p in (graph.path(models_dir) for graph in graphs_of(name)) if p.is_file()]
    return paths


def copy_graphs(models_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy the current graphs of ``models_dir`` into ``dest`` (the model files already copied
    there, byte for byte, so the graphs' names still fit them); the stale ones there are removed."""
    copied = []
    for src in current_graphs(models_dir):
        target = Path(dest) / src.parent.name / src.name
        if not target.is_file() or target.stat().st_size != src.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(src, target)
        copied.append(target)
    for name in MODELS:
        if (Path(dest) / f"{name}.pt").is_file():
            for old in (p for graph in graphs_of(name) for p in graph.stale(dest)):
                old.unlink(missing_ok=True)
    return copied
