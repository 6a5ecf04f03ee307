import csv
import json

import pytest

from foundation.schema import BOS, EOS, Schema, SchemaError, default_schema, load_schema


def test_every_group_has_unique_values_and_category_synonyms():
    s = default_schema()
    for g in s.groups:
        assert len(set(g.values)) == len(g.values), g.name
    for name in s.category_names:
        assert s.categories[name].synonyms, f"{name} has no text synonyms"


def test_required_groups_in_generation_order():
    names = [g.name for g in default_schema().groups]
    for required in (
        "great_category",
        "category",
        "age_group",
        "colour",
        "pattern",
        "sleeve_length",
        "garment_length",
        "neckline",
        "fit",
    ):
        assert required in names
    assert names[:2] == ["great_category", "category"]


def test_applicability():
    s = default_schema()
    assert not s.applies("neckline", "pants")
    assert s.applies("neckline", "shirt")
    assert s.applies("garment_length", "skirt")
    assert not s.applies("sleeve_length", "shoes")
    assert s.applies("colour", "bag")


def test_encode_decode_round_trip_in_schema_order():
    s = default_schema()
    attrs = s.complete({"fit": "slim", "colour": "red", "sleeve_length": "long"}, "shirt")
    ids = s.encode(attrs)
    assert s.tokens[ids[0]] == BOS and s.tokens[ids[-1]] == EOS
    groups = [s.parse_token(i)[0] for i in ids[1:-1]]
    order = [g.name for g in s.groups]
    assert groups == sorted(groups, key=order.index)
    assert s.decode(ids) == attrs


def test_attribute_errors_name_the_problem():
    s = default_schema()
    assert s.attribute_errors({"category": "pants", "neckline": "collar"}) == ["'neckline' does not apply to 'pants'"]
    assert "unknown attribute group 'zip'" in s.attribute_errors({"zip": "yes"})
    assert "unknown value 'teal' for 'colour'" in s.attribute_errors({"colour": "teal"})
    assert s.attribute_errors({"category": "pants", "great_category": "tops"})


def test_unknown_category_error_lists_known():
    with pytest.raises(SchemaError, match="unknown category 'sari'.*t-shirt"):
        default_schema().check_category("sari")


def test_fingerprint_changes_with_vocabulary():
    raw = default_schema().to_dict()
    same = Schema(raw)
    assert same.fingerprint == default_schema().fingerprint
    raw["groups"][3]["values"].append("teal")
    assert Schema(raw).fingerprint != default_schema().fingerprint


def test_bad_schema_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text('[[groups]]\nname = "colour"\nvalues = ["red", "red"]\n[categories]\n')
    with pytest.raises(SchemaError):
        load_schema(bad)


def test_every_clothing_label_is_mapped(clothing_dir):
    s = default_schema()
    with (clothing_dir / "images.csv").open() as fh:
        labels = {row["label"] for row in csv.DictReader(fh)}
    for label in labels:
        s.dataset_category("clothing", label)  # raises when unmapped


def test_every_ccp_label_is_mapped(ccp_dir):
    s = default_schema()
    for label in json.loads((ccp_dir / "labels.json").read_text()):
        s.dataset_category("ccp", label)
    assert s.dataset_category("ccp", "skin") is None
    assert s.dataset_category("ccp", "jeans") == "jeans"
