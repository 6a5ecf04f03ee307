"""The engine's answers on the stand-in index, compared with the answers of the code before the
query/answer/ranking refactor (commit e373fbc), byte for byte but for ids and timings.

``tests/data/answers_e373fbc.json`` was written by that commit's ``SearchEngine.search`` and
``rerun`` over the same index (the synthetic catalogue of ``conftest.synth_dump``, indexed with
the stand-in models of ``tests/standin.py``) for each entry of ``SPECS``. A change of ranking,
narrowing, hedging or the answer's shape shows here as a diff; a deliberate one re-writes the file
and says why in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).with_name("data") / "answers_e373fbc.json"

# (catalogue row, option, category, box as a share of the photo, narrowing, re-run narrowing or None)
SPECS = [
    (0, "auto", None, None, {"k": 10}, None),
    (1, "auto", None, None, {"k": 5}, {"k": 5, "offset": 5}),
    (2, "auto", None, None, {"k": 8, "filters": {"colour": "red"}}, None),
    (3, "guided", "pants", None, {"k": 10}, None),
    (4, "guided", "t-shirt", None, {"k": 7, "price_min": 20.0, "price_max": 90.0}, {"k": 7, "offset": 7}),
    (5, "guided", "dress", None, {"k": 4, "filters": {"sleeve_length": "long"}}, {"k": 4, "filters": {}}),
    (6, "guided", "hat", None, {"k": 6}, None),
    (7, "rectangle", None, (0.1, 0.1, 0.7, 0.8), {"k": 10}, None),
    (8, "rectangle", "skirt", (0.2, 0.3, 0.9, 0.95), {"k": 5}, {"k": 12, "price_max": 60.0}),
    (9, "rectangle", None, (0.0, 0.0, 1.0, 1.0), {"k": 3, "offset": 2}, None),
    (10, "auto", None, None, {"k": 20, "filters": {"colour": "blue", "pattern": "solid"}}, None),
    (11, "guided", "jacket", None, {"k": 200}, None),
    (12, "auto", None, None, {"k": 1, "offset": 1000}, None),
    (13, "guided", "pants", None, {"k": 9, "price_min": 200.0}, None),
]


NEW = ("garment",)  # fields an answer gained since: every garment found, and which one is answered


def strip(answer: dict) -> dict:
    """An answer's fields of e373fbc without what differs from run to run (its id and timings)."""
    query = {k: v for k, v in answer["query"].items() if k not in ("id", "timings_ms", *NEW)}
    return {"query": query, "results": answer["results"]}


def photo_and_box(rows, dump_dir: Path, row: int, share):
    from PIL import Image

    path = dump_dir / rows[row]["image"]
    if share is None:
        return path.read_bytes(), None
    w, h = Image.open(path).size
    box = (share[0] * w, share[1] * h, share[2] * w, share[3] * h)
    return path.read_bytes(), box


def run_specs(engine, rows, dump_dir: Path) -> list[dict]:
    """Every spec's answer (and its re-run's), as the engine of this commit gives them."""
    from search.query import Query

    out = []
    for row, option, category, share, narrowing, again in SPECS:
        photo, box = photo_and_box(rows, dump_dir, row, share)
        answer = engine.search(Query.search(photo, option, category=category, box=box, **narrowing)).to_json()
        out.append(strip(answer))
        if again is not None:
            out.append(strip(engine.search(Query.rerun(answer["query"]["id"], **again)).to_json()))
    return out


@pytest.mark.skipif(not GOLDEN.is_file(), reason="no recorded answers")
def test_answers_are_those_of_the_code_before_the_refactor(engine, rows, synth_dump):
    expected = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(run_specs(engine, rows, synth_dump.parent)))
    assert len(got) == len(expected)
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"answer {n} differs"
