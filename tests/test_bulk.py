"""The bulk indexer: bad files reported, kill -9 then resume, incremental add/update/delete."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from indexer.bulk import BulkConfig, build_index
from indexer.store import Store
from tests.indexer_fakes import fake_describer, fake_models

ROOT = Path(__file__).resolve().parents[1]
GOOD = 16


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return fake_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def messy_dump(synth_dump, tmp_path_factory) -> tuple[Path, set[str], dict[str, str]]:
    """16 good synthetic products plus one of each kind of bad row; returns (dump, good ids, bad id -> why)."""
    out = tmp_path_factory.mktemp("messy")
    rows = [json.loads(line) for line in synth_dump.read_text().splitlines()[:GOOD]]
    for r in rows:
        r["image"] = str(synth_dump.parent / r["image"])
    good = {r["id"] for r in rows}
    real = Path(rows[0]["image"]).read_bytes()
    files = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "empty.jpg": b"",
        "truncated.jpg": real[: len(real) // 3],
        "notes.jpg": b"this is a text file, not a photo\n" * 10,
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    Image.new("1", (16000, 12000)).save(out / "huge.png")  # 192 Mpixel: over Pillow's bomb guard
    Image.new("RGB", (200, 200), (230, 230, 230)).save(out / "blank.jpg")
    bad = {
        "bad-corrupt": "corrupt.jpg",
        "bad-empty": "empty.jpg",
        "bad-truncated": "truncated.jpg",
        "bad-notes": "notes.jpg",
        "bad-huge": "huge.png",
        "bad-blank": "blank.jpg",
        "bad-missing": "nothing.jpg",
    }
    extra = [{"id": pid, "image": str(out / name), "title": "red t-shirt"} for pid, name in bad.items()]
    dup_image = {"id": "dup-image", "image": rows[1]["image"], "title": rows[1]["title"]}
    lines = [json.dumps(r) for r in rows[:8]] + [json.dumps(e) for e in extra]
    lines += [json.dumps(rows[0] | {"title": "duplicate id row"}), "{not json", json.dumps(dup_image)]
    lines += [json.dumps(r) for r in rows[8:]]
    dump = out / "products.jsonl"
    dump.write_text("\n".join(lines) + "\n")
    return dump, good | {"dup-image"}, bad


def _contents(index: Path) -> dict:
    with Store(index) as store:
        out = {}
        for r in store.iter_records():
            d = r.photos[0].description
            out[r.id] = (
                r.content_hash,
                r.title,
                d.category,
                tuple(d.attributes.items()),
                d.roi,
                d.fallback,
                d.code.tobytes(),
                d.colour.tobytes(),
                store.thumbnail(r.id),
            )
        return out


def test_every_good_product_once_and_every_bad_one_reported(messy_dump, models, tmp_path):
    dump, good, bad = messy_dump
    summary = build_index(
        dump,
        models,
        tmp_path / "index",
        BulkConfig(workers=2, batch_size=8, progress=False),
        describer=fake_describer(models),
    )
    with Store(tmp_path / "index") as store:
        assert {r.id for r in store.iter_records()} == good
        assert store.info()["code_bytes"] == 232 and store.info()["colour_bins"] == 132
    assert summary["indexed"] == len(good) and summary["products"] == len(good)
    report = json.loads((tmp_path / "index" / "report.json").read_text())
    reasons = {s["id"]: s["reason"] for s in report["skipped"]}
    assert set(bad) <= set(reasons)
    assert "empty" in reasons["bad-empty"] and "too large" in reasons["bad-huge"]
    assert "truncated" in reasons["bad-truncated"] and "blank" in reasons["bad-blank"]
    assert "no image" in reasons["bad-missing"] or "cannot read" in reasons["bad-missing"]
    assert any("duplicate id" in s["reason"] for s in report["skipped"])
    assert any("JSON" in s["reason"] for s in report["skipped"])
    assert report["duplicates"] == [
        {
            "id": "dup-image",
            "same_image_as": "synth-7-000001",
            "image": json.loads(dump.read_text().splitlines()[1])["image"],
        }
    ]
    assert (tmp_path / "index" / "models" / "appearance.pt").is_file()


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {root!r})
from indexer.bulk import BulkConfig, Pipeline, build_index
from tests.indexer_fakes import fake_describer
def die(counts):
    if counts["indexed"] >= 8:
        os.kill(os.getpid(), signal.SIGKILL)
build_index({dump!r}, {models!r}, {out!r}, BulkConfig(workers=2, batch_size=4, progress=False),
            describer=fake_describer({models!r}), pipeline=Pipeline(on_batch=die))
"""


@pytest.mark.slow  # a second process killed mid-run, then two whole index builds: ~3 s
def test_kill_9_then_resume_equals_an_uninterrupted_run(messy_dump, models, tmp_path):
    dump, good, _bad = messy_dump
    build_index(
        dump,
        models,
        tmp_path / "whole",
        BulkConfig(workers=0, batch_size=8, progress=False),
        describer=fake_describer(models),
    )
    script = _KILLED_RUN.format(root=str(ROOT), dump=str(dump), models=str(models), out=str(tmp_path / "killed"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with Store(tmp_path / "killed") as store:
        assert len(store) == 8  # the two committed batches, nothing of the third
    summary = build_index(
        dump,
        models,
        tmp_path / "killed",
        BulkConfig(workers=0, batch_size=4, progress=False),
        describer=fake_describer(models),
    )
    assert summary["unchanged"] == 8 and summary["unchanged"] + summary["indexed"] == len(good)
    assert _contents(tmp_path / "killed") == _contents(tmp_path / "whole")


def test_incremental_add_update_and_delete_missing(synth_dump, models, tmp_path):
    rows = [json.loads(line) for line in synth_dump.read_text().splitlines()[30:40]]
    for r in rows:
        r["image"] = str(synth_dump.parent / r["image"])
    dump = tmp_path / "a.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    index = tmp_path / "index"
    first = build_index(
        dump, models, index, BulkConfig(workers=0, batch_size=4, progress=False), describer=fake_describer(models)
    )
    assert first["added"] == 8
    before = _contents(index)
    # a changed title, a changed image, one gone, two new
    rows[0]["title"] = rows[0]["title"] + " (new season)"
    new_image = tmp_path / "changed.jpg"
    shutil.copy(rows[9]["image"], new_image)
    rows[1]["image"] = str(new_image)
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + rows[3:10]))
    second = build_index(
        dump, models, index, BulkConfig(workers=0, batch_size=4, progress=False), describer=fake_describer(models)
    )
    assert (second["added"], second["updated"], second["unchanged"], second["deleted"]) == (2, 2, 5, 0)
    after = _contents(index)
    assert rows[2]["id"] in after  # kept without --delete-missing
    assert after[rows[0]["id"]][1].endswith("(new season)")
    assert after[rows[1]["id"]][6] != before[rows[1]["id"]][6] or after[rows[1]["id"]][7] != before[rows[1]["id"]][7]
    assert all(after[r["id"]] == before[r["id"]] for r in rows[3:8])
    third = build_index(
        dump,
        models,
        index,
        BulkConfig(workers=0, batch_size=4, delete_missing=True, progress=False),
        describer=fake_describer(models),
    )
    assert (third["indexed"], third["deleted"], third["products"]) == (0, 1, 9)
    assert rows[2]["id"] not in _contents(index)


def test_bad_arguments_are_named(synth_dump, models, tmp_path):
    with pytest.raises(ValueError, match="--batch-size"):
        build_index(synth_dump, models, tmp_path / "i", BulkConfig(batch_size=0), describer=object())
    with pytest.raises(ValueError, match="--device"):
        build_index(synth_dump, models, tmp_path / "i", BulkConfig(device="tpu"), describer=object())
    with pytest.raises(FileNotFoundError, match="no product dump"):
        build_index(tmp_path / "none.jsonl", models, tmp_path / "i", BulkConfig(progress=False), describer=object())


def test_index_command_reports_bad_flags(synth_dump, models, tmp_path, capsys):
    from cli.main import main

    assert (
        main(["index", str(synth_dump), "--models", str(models), "--out", str(tmp_path / "i"), "--batch-size", "0"])
        == 2
    )
    assert "--batch-size must be at least 1, got 0" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "none.jsonl"), "--models", str(models), "--out", str(tmp_path / "i")]) == 2
    assert "no product dump" in capsys.readouterr().err


def test_category_from_text_else_labelled_attributes_else_auto(synth_dump, models, tmp_path):
    image = str(synth_dump.parent / "images" / "000000.jpg")
    rows = [
        {
            "id": "text",
            "image": image,
            "title": "pleated skirt",
            "attributes": {"great_category": "tops", "category": "shirt"},
        },
        {
            "id": "label",
            "image": image,
            "title": "new arrival",
            "attributes": {"great_category": "bottoms", "category": "skirt"},
        },
        {"id": "auto", "image": image, "title": "new arrival"},
    ]
    dump = tmp_path / "d.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(
        dump, models, tmp_path / "index", BulkConfig(workers=0, progress=False), describer=fake_describer(models)
    )
    with Store(tmp_path / "index") as store:
        assert store.get("text").photos[0].description.category == "skirt"
        assert store.get("label").photos[0].description.category == "skirt"
        from tests.indexer_fakes import FakePredictor

        assert store.get("auto").photos[0].description.category in FakePredictor.AUTO
