"""The retrieval evaluation on the shared real photos, with whatever real models exist.

    .venv/bin/python benchmarks/retrieval_real.py --models .fashion-search/models-real --out REPORT_DIR [--queries M]

Same as ``fashion-search evaluate retrieval --clothing ../shared/datasets/clothing --ccp
../shared/datasets/ccp``, except that when the models directory has no detector (detector.pt)
the run goes on without one: every option that needs the detector uses the whole photo
(``fallback``), as the engine does when the detector finds nothing, and the report says so in
its "no garment found" column. Prints the headline tables and the run time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


@dataclass(frozen=True)
class _WholePhoto:
    size: tuple[int, int]
    rois: tuple = ()
    roi: None = None
    fallback: bool = True

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (0.0, 0.0, float(self.size[0]), float(self.size[1]))


def describer_without_detector(models: Path):
    """None when ``models`` has a detector; else a Describer whose ROI is always the whole photo."""
    if (models / "detector.pt").is_file():
        return None
    from appearance.model import AppearanceCoder
    from attributes.predict import AttributePredictor
    from indexer.describe import Describer

    logging.warning("no detector in %s: every option but the rectangle uses the whole photo", models)
    return Describer(
        predictor=AttributePredictor.load(models), detector=NoDetector(), coder=AppearanceCoder.load(models)
    )


class NoDetector:
    """Finds nothing: callers fall back to the whole photo."""

    def raw(self, images):
        return [im.size for im in images]

    def presence(self, raw, within=None):
        return {}

    def garments(self, raw):
        return []

    def choose(self, raw, guide, size):
        return _WholePhoto(size)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--clothing", default=str(SHARED / "clothing"))
    p.add_argument("--ccp", default=str(SHARED / "ccp"))
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="val")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    sys.path.insert(0, str(ROOT))
    import torch

    from evaluation.retrieval import RetrievalEvalConfig, RetrievalInputs, evaluate_retrieval
    from evaluation.tables import result_tables

    # One thread: on a loaded 2-core machine two threads spin against each other (single-image
    # searches measured 5.3 s with two threads, 0.11 s with one, while other jobs ran).
    torch.set_num_threads(1)
    models = Path(args.models)
    describer = describer_without_detector(models)
    cfg = RetrievalEvalConfig(split=args.split, queries=args.queries, seed=args.seed)
    inputs = RetrievalInputs(args.clothing, args.ccp, models)
    result = evaluate_retrieval(inputs, args.out, config=cfg, describer=describer)
    for table in result_tables(result["metrics"], k=cfg.k):
        print(f"\n{table.title}")
        print(" | ".join(table.columns[:-1]))
        for row in table.rows:
            print(" | ".join(f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v)) for v in row[:-1]))
    print(f"\nstages (s): {result['stages_s']}")
    print(f"detector: {'none (whole photo)' if describer else 'detector.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
