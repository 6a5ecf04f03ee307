"""Converters of the shared real datasets into product dumps (skipped when the data is absent)."""

from __future__ import annotations

import csv

import pytest

from catalogues.convert import convert_clothing, derived_attributes
from catalogues.datasets import ccp_split
from cli.main import main
from foundation.dump import DumpReport, read_dump
from foundation.schema import default_schema

SCHEMA = default_schema()


def test_derived_attributes_follow_the_schema():
    assert derived_attributes("t-shirt", SCHEMA, kids=True) == {
        "age_group": "kids",
        "sleeve_length": "short",
        "category": "t-shirt",
        "great_category": "tops",
    }
    assert "sleeve_length" not in derived_attributes("shirt", SCHEMA)  # shirts come with either
    assert derived_attributes("pants", SCHEMA) == {"category": "pants", "great_category": "bottoms"}
    for cat in SCHEMA.category_names:
        assert SCHEMA.attribute_errors(derived_attributes(cat, SCHEMA, kids=False)) == []


def test_clothing_val_split_converts_to_a_clean_dump(clothing_dir, tmp_path):
    dump, counts = convert_clothing(clothing_dir, tmp_path, split="val", progress=False)
    report = DumpReport()
    products = list(read_dump(dump, report=report))
    assert report.problems == [] and len(products) == counts["products"] > 500
    with (clothing_dir / "images.csv").open(newline="") as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    for p in products:
        row = rows[p.id.removeprefix("clothing-")]
        assert row["split"] == "val"
        assert p.attributes["category"] == SCHEMA.dataset_category("clothing", row["label"])
        assert p.attributes["age_group"] == ("kids" if row["kids"] == "True" else "adult")
    left_out = sum(1 for r in rows.values() if r["split"] == "val" and r["label"] in ("Not sure", "Other"))
    assert counts["left_out"] >= left_out


def test_ccp_crops_keep_the_fixed_split(ccp_dir, tmp_path, capsys):
    assert main(["convert", "ccp-crops", str(ccp_dir), "--out", str(tmp_path), "--split", "val"]) == 0
    assert "products to" in capsys.readouterr().out
    products = list(read_dump(tmp_path / "products.jsonl"))
    assert len(products) > 100
    for p in products:
        photo = f"photos/{p.id.split('-')[1]}.jpg"
        assert ccp_split(photo) == "val"
        assert p.attributes["category"] in SCHEMA.categories and "age_group" not in p.attributes
        assert min(p.photos[0].size) >= 32


def test_unknown_split_is_an_error(clothing_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'test'"):
        convert_clothing(clothing_dir, tmp_path, split="test")
