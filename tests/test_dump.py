import json

import pytest
from PIL import Image

from foundation.dump import DumpReport, read_dump


@pytest.fixture
def images(tmp_path):
    Image.new("RGB", (100, 80), (200, 10, 10)).save(tmp_path / "good.jpg")
    Image.new("RGB", (100, 80), (10, 10, 200)).save(tmp_path / "good2.png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image")
    return tmp_path


def _write(path, rows):
    with path.open("w") as fh:
        for row in rows:
            fh.write(row if isinstance(row, str) else json.dumps(row))
            fh.write("\n")


def test_every_bad_row_reported_once_and_good_rows_read(images):
    rows = [
        {
            "id": "a",
            "image": "good.jpg",
            "title": "Red t-shirt",
            "boxes": [[1, 2, 50, 60, "t-shirt"]],
            "attributes": {"colour": "red", "category": "t-shirt"},
        },
        {"image": "good.jpg", "title": "no id"},  # 2 missing id
        {"id": "a", "image": "good2.png", "title": "again"},  # 3 duplicate
        {"id": "c", "image": "missing.jpg", "title": "x"},  # 4 missing file
        {"id": "d", "image": "zero.jpg", "title": "x"},  # 5 zero bytes
        {"id": "e", "image": "text.jpg", "title": "x"},  # 6 not an image
        {"id": "f", "image": "good.jpg", "title": "x", "boxes": [[10, 10, 5, 20, "pants"]]},  # 7 inverted box
        {"id": "g", "image": "good.jpg", "title": "x", "boxes": [[0, 0, 500, 20, "pants"]]},  # 8 outside
        {"id": "h", "image": "good.jpg", "title": "x", "boxes": [[0, 0, 5, 5, "spaceship"]]},  # 9 unknown cat
        {"id": "i", "image": "good.jpg", "title": "x", "attributes": {"colour": "teal"}},  # 10 unknown attr
        "{not json",  # 11
        {"id": "j", "image": "good.jpg", "title": "x", "boxes": [[1, 2, 3]]},  # 12 malformed box
        {"id": "k", "image": "good.jpg", "title": "x", "price": "cheap"},  # 13 bad price
        {"id": "l", "image": "good.jpg"},  # 14 no text
        {"id": 7, "image": "good2.png", "category_path": "women/tops/blouse", "price": "12.5"},  # 15 good
    ]
    dump = images / "products.jsonl"
    _write(dump, rows)
    report = DumpReport()
    products = list(read_dump(dump, report=report))
    assert [p.id for p in products] == ["a", "7"]
    assert products[0].boxes[0].category == "t-shirt" and products[0].photos[0].size == (100, 80)
    assert products[1].price == 12.5 and products[1].line == 15
    by_line = {p.line: p for p in report.problems}
    assert sorted(by_line) == list(range(2, 15))
    assert len(report.problems) == 13
    expect = {
        2: ("id", "missing id"),
        3: ("id", "duplicate"),
        4: ("image", "no image file"),
        5: ("image", "0 bytes"),
        6: ("image", "not an image"),
        7: ("boxes", "inverted"),
        8: ("boxes", "outside"),
        9: ("boxes", "unknown category"),
        10: ("attributes", "teal"),
        11: ("row", "JSON"),
        12: ("boxes", "must be"),
        13: ("price", "number"),
        14: ("title", "neither"),
    }
    for line, (field, words) in expect.items():
        assert by_line[line].field == field, line
        assert words in by_line[line].reason, (line, by_line[line].reason)
    out = images / "report.json"
    report.write(out)
    saved = json.loads(out.read_text())
    assert saved["good"] == 2 and saved["skipped"] == 13 and saved["rows"] == 15


def test_csv_dump_with_json_cells(images):
    dump = images / "products.csv"
    dump.write_text(
        "id,image,title,category_path,price,url,attributes,boxes\n"
        'p1,good.jpg,Red tee,,9.99,http://shop/p1,"{""colour"": ""red""}","[[0, 0, 10, 10, ""t-shirt""]]"\n'
        'p2,good.jpg,Bad,,,,"{not json",\n'
    )
    report = DumpReport()
    products = list(read_dump(dump, report=report))
    assert [p.id for p in products] == ["p1"]
    assert products[0].attributes == {"colour": "red"} and products[0].url == "http://shop/p1"
    assert report.problems[0].line == 3 and report.problems[0].field == "attributes"


def test_reader_streams(images):
    dump = images / "big.jsonl"
    _write(dump, [{"id": str(i), "image": "good.jpg", "title": "tee"} for i in range(1000)])
    it = read_dump(dump, check_images=False)
    first = next(it)
    assert first.id == "0"


def test_a_rows_boxes_never_become_its_explicit_category(images):
    """A training row's boxes name the garments in its photo; only its own ``category`` field is the
    seller's explicit pick (the last box's category once leaked into it, indexing shoes as dresses)."""
    dump = images / "boxed.jsonl"
    boxes = [[1, 1, 20, 20, "shoes"], [30, 10, 90, 70, "dress"]]
    _write(
        dump,
        [
            {"id": "a", "image": "good.jpg", "title": "Kids' pink striped shoes", "boxes": boxes},
            {"id": "b", "image": "good.jpg", "title": "tote", "category": "bag", "boxes": boxes},
        ],
    )
    a, b = read_dump(dump)
    assert a.category is None and [x.category for x in a.boxes] == ["shoes", "dress"]
    assert b.category == "bag"


def test_missing_dump_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no product dump"):
        list(read_dump(tmp_path / "nope.jsonl"))


def test_decompression_bomb_is_refused(tmp_path):
    from foundation.images import ImageError, load_image

    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_truncated_image_is_refused(tmp_path):
    from foundation.images import ImageError, load_image

    Image.new("RGB", (300, 300), (1, 2, 3)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])
