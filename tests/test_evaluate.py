"""The retrieval evaluation's parts that need no model: metrics, bookkeeping, baselines' rankings, the report."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from evaluation.baselines import Searcher, code_rankings, colour_rankings, float_ranking
from evaluation.metrics import (
    AUTO_GARMENTS,
    COLOUR_ONLY,
    SHOP,
    STREET_GARMENT,
    STREET_PHOTO,
    GarmentGroup,
    Query,
    QueryImages,
    Ranking,
    Run,
    cases,
    precision_at_k,
    recall_at_k,
    summarise,
    target_rank,
)
from evaluation.queries import street_queries
from evaluation.report import (
    Plot,
    Report,
    Strip,
    Table,
    Thumb,
    curve_plot,
    render_html,
    thumbnail_jpeg,
    write_report,
)
from evaluation.tables import result_tables


# -- metrics ------------------------------------------------------------------------------------
def test_recall_at_k_counts_the_target_within_the_cut_off():
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, "a", 1) == 1.0
    assert recall_at_k(ranked, "c", 2) == 0.0
    assert recall_at_k(ranked, "c", 3) == 1.0
    assert recall_at_k(ranked, "z", 10) == 0.0  # never returned
    assert recall_at_k([], "z", 10) == 0.0
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        recall_at_k(ranked, "a", 0)


def test_precision_at_k_counts_missing_results_as_wrong():
    labels = ["pants", "skirt", "pants"]
    assert precision_at_k(labels, {"pants"}, 2) == 0.5
    assert precision_at_k(labels, {"pants"}, 3) == pytest.approx(2 / 3, abs=1e-6)
    assert precision_at_k(labels, {"pants"}, 10) == pytest.approx(0.2)  # 7 results missing
    assert precision_at_k(labels, {"pants", "skirt"}, 3) == 1.0
    assert precision_at_k([], {"pants"}, 10) == 0.0


def test_target_rank():
    assert target_rank(["a", "b"], "b") == 2
    assert target_rank(["a", "b"], "c") is None


def _run() -> tuple[Run, dict]:
    category_of = {"p1": "pants", "p2": "pants", "p3": "skirt", "p4": "dress"}
    queries = [
        Query("s1", SHOP, "img1", "pants", (0, 0, 10, 10), "p1", frozenset({"pants"})),
        Query("s2", SHOP, "img2", "skirt", (0, 0, 10, 10), "p3", frozenset({"skirt"})),
        Query("g1", STREET_GARMENT, "img3", "dress", (0, 0, 10, 10), None, frozenset({"dress"})),
        Query("w1", STREET_PHOTO, "img3", None, None, None, frozenset({"dress", "pants"})),
    ]
    run = Run(queries)
    run.put("rectangle", "s1", Ranking(["p1", "p2"], category="pants"))
    run.put("rectangle", "s2", Ranking(["p1", "p4", "p3"], category="pants"))
    run.put("rectangle", "g1", Ranking(["p4", "p3"], category="dress"))
    run.put("auto", "w1", Ranking(["p4", "p3", "p2"], category="dress", fallback=True))
    run.put(COLOUR_ONLY, "s1", Ranking(["p3"]))
    return run, category_of


def test_summarise_means_per_set_and_system():
    run, category_of = _run()
    m = summarise(run, category_of, k=2, depth=3)
    rect = m[SHOP]["systems"]["rectangle"]
    assert rect["R@1"] == 0.5 and rect["R@2"] == 0.5  # s1 at rank 1, s2's target at rank 3
    assert rect["recall_curve"] == [0.5, 0.5, 1.0]
    assert rect["P@2"] == 0.5  # s1: 2/2 pants; s2: 0/2 skirts
    assert rect["category_right"] == 0.5
    assert rect["not_found"] == 0
    assert m[SHOP]["systems"][COLOUR_ONLY]["queries"] == 1
    assert m[STREET_GARMENT]["systems"]["rectangle"]["P@2"] == 0.5
    assert m[STREET_PHOTO]["systems"]["auto"]["precision_curve"] == [1.0, 0.5, pytest.approx(0.6667)]
    assert m[STREET_PHOTO]["systems"]["auto"]["fallback_share"] == 1.0
    json.dumps(m)  # what metrics.json holds


def test_every_garment_is_scored_by_its_own_group_in_deepfashion2s_protocol():
    category_of = {"p1": "pants", "p2": "pants", "p3": "skirt", "p4": "dress", "p5": "t-shirt"}
    queries = [
        Query("s1", SHOP, "img1", "pants", (0, 50, 40, 100), "p1", frozenset({"pants"})),
        Query("s2", SHOP, "img2", "skirt", (0, 0, 10, 10), "p3", frozenset({"skirt"})),
        Query("w1", STREET_PHOTO, "img3", None, None, None, frozenset({"dress", "t-shirt"})),
        Query("g1", STREET_GARMENT, "img3", "dress", (0, 0, 50, 50), None, frozenset({"dress"})),
        Query("g2", STREET_GARMENT, "img3", "t-shirt", (60, 60, 90, 90), None, frozenset({"t-shirt"})),
    ]
    run = Run(queries)
    top = GarmentGroup((0, 0, 40, 40), "t-shirt", ["p5"])
    # s1: the target's garment is offered second (IoU 0.9 with its box), its group finds it at rank 2
    run.put("auto", "s1", Ranking(["p5"], garments=[top, GarmentGroup((0, 55, 40, 100), "pants", ["p2", "p1"])]))
    run.put("auto", "s2", Ranking(["p4"], garments=[GarmentGroup((50, 50, 90, 90), "dress", ["p4"])]))  # missed
    run.put("auto", "w1", Ranking(["p4"], garments=[GarmentGroup((0, 0, 48, 52), "dress", ["p4", "p3"])]))
    looks = summarise(run, category_of, k=2, depth=2)
    shop = looks[SHOP]["systems"][AUTO_GARMENTS]
    assert shop["offered"] == 0.5 and shop["R@1"] == 0.0 and shop["R@2"] == 0.5 and shop["first R@2"] == 0.0
    assert shop["first R@2, largest first"] == 0.5  # s1's pants box is the larger
    assert shop["first is the target"] == 0.0 and shop["first is the target by chance"] == 0.5
    street = looks[STREET_PHOTO]["systems"][AUTO_GARMENTS]
    assert street["offered"] == 0.5  # the dress offered, the t-shirt not
    assert street["P@2"] == 0.5 and street["garments"] == 2  # p4 a dress, p3 not


def test_cases_puts_missed_targets_first_and_hits_at_rank_one_last():
    run, category_of = _run()
    worst, best = cases(run, "rectangle", SHOP, category_of, k=2, n=1)
    assert [q.id for q in worst] == ["s2"]
    assert [q.id for q in best] == ["s1"]


def test_tables_hold_every_system_and_metric():
    run, category_of = _run()
    tables = result_tables(summarise(run, category_of, k=2, depth=3), k=2)
    shop, street, looks = tables
    assert looks.rows[1][0] == "street photos" and looks.rows[1][1] == 0.0  # auto offered no garment here
    assert [r[0] for r in shop.rows] == ["rectangle", COLOUR_ONLY]
    assert shop.rows[0][1:3] == [0.5, 0.5]
    assert {r[0] for r in street.rows} == {"auto", "rectangle"}


# -- the baselines' rankings --------------------------------------------------------------------
def test_colour_and_code_rankings_find_the_identical_item_first():
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(50)]
    colours = rng.random((50, 12)).astype(np.float32)
    codes = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    assert [r[0] for r in colour_rankings(colours[[3, 7]] * 5.0, colours, ids, 5)] == ["p3", "p7"]  # scale-free
    got = code_rankings(codes[[3, 7]], codes, ids, 5)
    assert [r[0] for r in got] == ["p3", "p7"] and all(len(r) == 5 for r in got)


def test_float_ranking_keeps_the_category_and_swaps_only_the_appearance_term():
    from search.index import InvertedIndex
    from search.ranking import RankingConfig
    from search.rows import PhotoRows

    rng = np.random.default_rng(1)
    n = 40
    ids = [f"p{i:02d}" for i in range(n)]
    cats = ["pants" if i % 2 else "skirt" for i in range(n)]
    index = InvertedIndex(code_bytes=4, colour_bins=6)
    searcher = Searcher(index, RankingConfig(w_colour=0.0, w_shared=0.0))
    colours = rng.random((n, 6)).astype(np.float32)
    index.add(PhotoRows(ids, cats, [{"colour": "red"}] * n, rng.integers(0, 256, (n, 4), dtype=np.uint8), colours))
    floats = {pid: f for pid, f in zip(ids, rng.normal(size=(n, 16)).astype(np.float32))}
    # With the colour and attribute terms off, the order is the cosine order within the category.
    q = floats["p05"] + 0.01
    # what an answer's "query" says of the garment: its category and attributes
    described = {"category": "pants", "attributes": [{"group": "colour", "value": "red", "p": 0.9}]}
    got = float_ranking(searcher, q, colours[5], described, floats, 5)
    want = sorted(
        (pid for pid, c in zip(ids, cats) if c == "pants"),
        key=lambda pid: -float(floats[pid] @ q) / np.linalg.norm(floats[pid]),
    )[:5]
    assert got == want and got[0] == "p05"
    assert float_ranking(searcher, q, colours[5], {"category": "dress", "attributes": []}, floats, 5) == []


# -- street queries -----------------------------------------------------------------------------
def test_street_queries_keep_mapped_garments_of_usable_size(tmp_path):
    from catalogues.datasets import ccp_split
    from evaluation.retrieval import RetrievalEvalConfig

    names = [f"{i:04d}.jpg" for i in range(40)]
    name = next(n for n in names if ccp_split(n) == "val")
    other = next(n for n in names if ccp_split(n) == "train")
    (tmp_path / "photos").mkdir()
    recs = []
    for n in (name, other):
        Image.new("RGB", (100, 150), "white").save(tmp_path / "photos" / n)
        recs.append(
            {
                "image": f"photos/{n}",
                "width": 100,
                "height": 150,
                "mask": f"masks/{n[:-4]}.png",
                "tags": ["skirt", "heels", "hair", "jacket"],
                "boxes": [
                    {"label": "skirt", "box": [10, 60, 70, 120], "pixels": 2500},
                    {"label": "heels", "box": [20, 130, 60, 150], "pixels": 300},  # too small: photo only
                    {"label": "hair", "box": [30, 0, 60, 40], "pixels": 900},  # no category
                    {"label": "jacket", "box": [0, 0, 90, 70], "pixels": 4000},
                ],
            }
        )  # not in the catalogue
    (tmp_path / "annotations.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    images = QueryImages()
    qs = street_queries(tmp_path, {"skirt", "shoes", "pants"}, images, RetrievalEvalConfig(split="val"))
    stem = name[:-4]
    assert [(q.id, q.set, q.category, q.accepted) for q in qs] == [
        (f"street-{stem}", STREET_PHOTO, None, frozenset({"skirt", "shoes"})),
        (f"street-{stem}-skirt", STREET_GARMENT, "skirt", frozenset({"skirt"})),
    ]
    assert qs[1].box == (10.0, 60.0, 70.0, 120.0)
    assert images.get(qs[0].image).size == (100, 150)


def test_query_images_round_trip_composed_scenes_losslessly():
    images = QueryImages()
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    images.add_image("scene", im)
    assert np.array_equal(np.asarray(images.get("scene")), np.asarray(im))
    with pytest.raises(KeyError, match="nope"):
        images.get("nope")


# -- the report ---------------------------------------------------------------------------------
class _Parsed(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.cells, self._cell = 0, [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        elif tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def parse_report(text: str) -> _Parsed:
    p = _Parsed()
    p.feed(text)
    p.close()
    return p


def test_report_is_self_contained_with_tables_plots_and_strips(tmp_path):
    im = Image.new("RGB", (300, 200), (200, 30, 30))
    thumb = thumbnail_jpeg(im, box=(10, 10, 100, 100))
    assert Image.open(__import__("io").BytesIO(thumb)).size == (112, 75)
    png = curve_plot({"a": [0.1, 0.5, 0.9], "b <&>": [0.0, 0.2, 0.3]}, [1, 2, 3], ylabel="recall@k", title="t")
    assert png.startswith(b"\x89PNG")
    report = Report(
        "Retrieval <test>",
        summary=["one line"],
        tables=[Table("Shop", ["system", "R@1"], [["rectangle", 0.51234], ["colour <only>", None]], note="n")],
        plots=[Plot("recall", png)],
        strips={
            "worst": [Strip("q1", Thumb(thumb, "query"), [Thumb(thumb, "1. pants", True), Thumb(None, "2.", False)])]
        },
    )
    path = write_report(report, tmp_path / "out")
    text = path.read_text(encoding="utf-8")
    parsed = parse_report(text)
    assert parsed.tables == 1
    assert ["system", "R@1", "rectangle", "0.512", "colour <only>", "–"] == parsed.cells
    assert len(parsed.images) == 3 and all(re.match(r"data:image/(png|jpeg);base64,", s) for s in parsed.images)
    assert "http" not in text and 'src="/' not in text  # nothing outside the file
    with pytest.raises(ValueError, match="has 1 cells for 2 columns"):
        render_html(Report("x", tables=[Table("t", ["a", "b"], [["only one"]])]))
    with pytest.raises(ValueError, match="2 points for 3 cut-offs"):
        curve_plot({"a": [0.1, 0.2]}, [1, 2, 3], ylabel="y", title="t")


# -- the command --------------------------------------------------------------------------------
def test_command_refuses_folders_without_the_dataset_layouts(tmp_path, capsys):
    from cli.main import main

    (tmp_path / "clothing").mkdir()
    (tmp_path / "models").mkdir()
    rc = main(
        [
            "evaluate",
            "retrieval",
            "--clothing",
            str(tmp_path / "clothing"),
            "--ccp",
            str(tmp_path / "ccp"),
            "--models",
            str(tmp_path / "models"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2
    assert "does not have the clothing layout: no images.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            ["evaluate", "retrieval", "--clothing", "c", "--ccp", "c", "--models", "m", "--out", "o", "--split", "test"]
        )


def test_config_checks_its_values():
    from evaluation.retrieval import RetrievalEvalConfig

    with pytest.raises(ValueError, match="--queries must be 0 .* got -1"):
        RetrievalEvalConfig(queries=-1)
    with pytest.raises(ValueError, match="k must be from 1 to depth \\(20\\), got 30"):
        RetrievalEvalConfig(k=30)
