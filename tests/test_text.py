import pytest

from foundation.text import category_from_text

CASES = [
    ("women's clothes/cardigan and knit/round-neck cardigan", "cardigan"),
    ("Slim fit dress shirt, white", "shirt"),
    ("Leather shoe bag for travel", "bag"),
    ("shoe bag", "bag"),
    ("T-shirt dress with pockets", "dress"),
    ("Striped shirt dress", "dress"),
    ("men/tops/polo shirts", "polo"),
    ("Kids striped tees", "t-shirt"),
    ("Long sleeve tee, organic cotton", "longsleeve"),
    ("Women's high-waist skinny jeans", "jeans"),
    ("denim jacket oversized", "jacket"),
    ("Denim shorts with frayed hem", "shorts"),
    ("Floral midi skirt with matching blouse", "skirt"),
    ("Bag for shoes", "bag"),
    ("boots for hiking", "boots"),
    ("men/shoes/sneakers", "shoes"),
    ("Nike running shoes men", "shoes"),
    ("Wool beanie", "hat"),
    ("Classic baseball cap", "hat"),
    ("Hooded sweatshirt grey", "hoodie"),
    ("Cable knit sweater", "sweater"),
    ("Trench coat beige", "coat"),
    ("Navy blazer, two buttons", "blazer"),
    ("women/dresses/maxi dresses", "dress"),
    ("Lace bodysuit", "bodysuit"),
    ("Cotton chinos slim", "pants"),
    ("Yoga leggings black", "leggings"),
    ("Puffer vest", "vest"),
    ("Silk blouse", "blouse"),
    ("Linen romper", "jumpsuit"),
    ("Ribbed tank top", "top"),
    ("Ankle boots suede", "boots"),
    ("women/outerwear/parkas", "jacket"),
    ("men > bottoms > cargo pants", "pants"),
    ("Tote bag canvas", "bag"),
    ("kids/tops", None),
    ("women's clothes", None),
    ("New arrivals - 50% off", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_category_from_text(text, expected):
    assert category_from_text(text) == expected


def test_title_beside_breadcrumb_is_more_specific():
    assert category_from_text("women/tops", "Silk blouse, ivory") == "blouse"
    assert category_from_text("women/skirts", None) == "skirt"
    assert category_from_text(None, None) is None
