"""``fashion-search query`` with filters, a price range, pages and JSON Lines, on the stand-in engine."""

from __future__ import annotations

import json
import shutil

import pytest

from cli.main import main
from tests.standin import open_standin_engine


@pytest.fixture
def index_dir(standin_index, tmp_path, monkeypatch):
    """A copy of the stand-in index; ``SearchEngine.open`` gives the real engine with the model stand-ins."""
    from search.engine import SearchEngine

    index_dir, describer = standin_index
    shutil.copytree(index_dir, tmp_path / "index")

    def fake_open(path, *, device="cpu", ranking=None, writable=True, runtime="torch"):
        return open_standin_engine(path, describer)  # the command closes it (with ... as engine)

    monkeypatch.setattr(SearchEngine, "open", staticmethod(fake_open))
    return tmp_path / "index"


@pytest.fixture
def photo_path(synth_dump, rows):
    return synth_dump.parent / next(r for r in rows if len(r["boxes"]) >= 2)["image"]


def _lines(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


def test_jsonl_prints_one_result_a_line_and_offset_pages(index_dir, photo_path, capsys):
    argv = ["query", str(index_dir), str(photo_path), "--category", "shoes", "--jsonl"]
    assert main([*argv, "--k", "6"]) == 0
    whole = _lines(capsys)
    assert len(whole) == 6 and [r["rank"] for r in whole] == [1, 2, 3, 4, 5, 6]
    assert all("attributes" in r and "score" in r for r in whole)
    assert main([*argv, "--k", "3", "--offset", "3"]) == 0
    page = _lines(capsys)
    assert [r["id"] for r in page] == [r["id"] for r in whole[3:]] and [r["rank"] for r in page] == [4, 5, 6]


def test_price_bounds_and_a_filter_reach_the_engine(index_dir, photo_path, capsys):
    argv = ["query", str(index_dir), str(photo_path), "--category", "shoes", "--k", "200"]
    assert main([*argv, "--json", "--price-min", "20", "--price-max", "60"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["results"] and all(20 <= r["price"] <= 60 for r in answer["results"])
    assert answer["query"]["filters"] == ["price_min=20", "price_max=60"]
    # the stand-in model sees no colour, so the index holds none: a colour filter leaves nothing
    assert main([*argv, "--filter", "colour=red"]) == 0
    table = capsys.readouterr().out
    assert "narrowed by: colour=red" in table and "(no results)" in table


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--filter", "colour=teal"], "unknown colour 'teal'"),
        (["--filter", "shape=round"], "unknown attribute group 'shape'"),
        (["--filter", "colour=red", "--filter", "colour=blue"], "colour is already 'red'"),
        (["--price-min", "9", "--price-max", "3"], "price_min 9 is above price_max 3"),
        (["--price-min", "-1"], "price_min must be a non-negative number"),
        (["--offset", "5000"], "offset must be an integer from 0 to 1000"),
    ],
)
def test_bad_flags_are_errors_before_the_models_load(tmp_path, photo_path, capsys, monkeypatch, flags, words):
    from search.engine import SearchEngine

    def never(*a, **k):
        raise AssertionError("the engine was opened")

    monkeypatch.setattr(SearchEngine, "open", staticmethod(never))
    assert main(["query", str(tmp_path), str(photo_path), *flags]) == 2
    assert words in capsys.readouterr().err
