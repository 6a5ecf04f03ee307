"""The ONNX Runtime graphs of a models directory: all three exported by one call, copied with the models.

Each model package says which part of its network runs on ONNX Runtime and exports it
(``appearance.model``, ``attributes.predict``, ``detector.predict``); ``foundation.runtime`` caches
the graphs in ``<models>/onnx/`` under the hash of the ``.pt`` they come from.
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


def graph_of(name: str) -> Graph:
    """The part of model ``name`` that runs on ONNX Runtime."""
    if name == "appearance":
        from appearance.model import ONNX_GRAPH

        return ONNX_GRAPH
    if name == "attributes":
        from attributes.predict import encoder_graph

        return encoder_graph()
    if name == "detector":
        from detector.predict import BACKBONE_GRAPH

        return BACKBONE_GRAPH
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def export_graphs(
    models_dir: str | Path, *, models: Sequence[str] = MODELS, schema: Schema | None = None, force: bool = False
) -> dict[str, dict]:
    """Export each model's graph into ``models_dir/onnx`` (kept when the model file is unchanged,
    unless ``force``). Returns, per model, its graph's path, whether it was exported now, and the seconds taken."""
    from appearance.model import export_onnx as export_appearance
    from attributes.predict import export_onnx as export_attributes
    from detector.predict import export_onnx as export_detector

    exporters = {"appearance": export_appearance, "attributes": export_attributes, "detector": export_detector}
    out = {}
    for name in models:
        graph = graph_of(name)
        path = graph.path(models_dir)
        t0 = time.perf_counter()
        exported = force or not path.is_file()
        if exported:
            path = exporters[name](models_dir, schema=schema)
        out[name] = {"graph": str(path), "exported": exported, "seconds": round(time.perf_counter() - t0, 1)}
    return out


def current_graphs(models_dir: str | Path) -> list[Path]:
    """The graphs cached for the model files ``models_dir`` holds now."""
    paths = []
    for name in MODELS:
        if (Path(models_dir) / f"{name}.pt").is_file():
            path = graph_of(name).path(models_dir)
            if path.is_file():
                paths.append(path)
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
            for old in graph_of(name).stale(dest):
                old.unlink(missing_ok=True)
    return copied
