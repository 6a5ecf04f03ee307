import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.index import InvertedIndex, hamming_topk
from search.narrowing import MAX_K, MAX_OFFSET, Narrowing
from search.ranking import RankingConfig
from search.rows import PhotoRows
from tests.ranking_helpers import pinned, ranked

CODE_BYTES, BINS = 8, 6  # small codes make distance ties common, which is what the tie tests need


def _brute(codes, ids, q, k):
    d = np.unpackbits(codes ^ q, axis=1).sum(1)
    order = sorted(range(len(ids)), key=lambda i: (d[i], ids[i]))[:k]
    return [ids[i] for i in order], [int(d[i]) for i in order]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.integers(0, 2**31))
def test_hamming_topk_equals_numpy_brute_force(n, k, seed):
    import faiss

    rng = np.random.default_rng(seed)
    # Few distinct codes: many exact ties, including at the k-th place.
    pool = rng.integers(0, 256, (max(2, n // 10), CODE_BYTES), dtype=np.uint8)
    codes = pool[rng.integers(0, len(pool), n)]
    ids = [f"id{rng.integers(0, 10**6):06d}-{i}" for i in range(n)]
    index = faiss.IndexBinaryFlat(CODE_BYTES * 8)
    index.add(codes)
    q = rng.integers(0, 256, CODE_BYTES, dtype=np.uint8)
    rows, dist = hamming_topk(index, ids, q, k)
    want_ids, want_d = _brute(codes, ids, q, k)
    assert [ids[r] for r in rows] == want_ids
    assert dist.tolist() == want_d


def _index(n=200, seed=0):
    rng = np.random.default_rng(seed)
    idx = InvertedIndex(code_bytes=CODE_BYTES, colour_bins=BINS)
    cats = rng.choice(["t-shirt", "pants", "dress"], n).tolist()
    ids = [f"p{i:04d}" for i in range(n)]
    attrs = [
        {"colour": str(rng.choice(["red", "blue", "black"])), "fit": str(rng.choice(["slim", "loose"]))}
        for _ in range(n)
    ]
    codes = rng.integers(0, 256, (n, CODE_BYTES), dtype=np.uint8)
    colours = rng.random((n, BINS))
    idx.add(PhotoRows(ids, cats, attrs, codes, colours))
    return idx, ids, cats, attrs, codes, colours


def test_postings_restrict_candidates():
    idx, ids, cats, attrs, codes, colours = _index()
    assert cats.count("pants") <= MAX_K  # one page holds them all
    res = ranked(idx, codes[0], colours[0], "pants", k=MAX_K)
    assert {h.id for h in res.hits} == {i for i, c in zip(ids, cats) if c == "pants"}
    assert res.candidates == cats.count("pants")
    red_pants = set(idx.postings("colour=red", "pants"))
    assert red_pants == {i for i, c, a in zip(ids, cats, attrs) if c == "pants" and a["colour"] == "red"}
    res = ranked(idx, codes[0], colours[0], "pants", k=MAX_K, filters={"colour": "red"})
    assert {h.id for h in res.hits} == red_pants


def test_exact_product_ranks_first_and_results_are_deterministic():
    idx, ids, cats, attrs, codes, colours = _index()
    for i in range(0, 200, 17):
        res = ranked(idx, codes[i], colours[i], cats[i], attrs[i], k=5)
        assert res.hits[0].id == ids[i] and res.hits[0].hamming == 0
        again = ranked(idx, codes[i], colours[i], cats[i], attrs[i], k=5)
        assert again.hits == res.hits


def _two_product_index():
    idx = InvertedIndex(code_bytes=CODE_BYTES, colour_bins=BINS)
    base = np.zeros(CODE_BYTES, np.uint8)
    return idx, base


def test_each_ranking_term_moves_results_the_right_way():
    col = np.array([1, 0, 0, 0, 0, 0], float)
    other = np.array([0, 0, 0, 0, 0, 1], float)
    # Appearance: nearer code ranks first, all else equal.
    idx, base = _two_product_index()
    near, far = base.copy(), base.copy()
    near[0], far[:3] = 0b1, 0xFF
    idx.add(PhotoRows(["a", "b"], ["pants", "pants"], [{}, {}], np.stack([far, near]), np.stack([col, col])))
    assert [h.id for h in ranked(idx, base, col, "pants").hits] == ["b", "a"]
    # Colour: same code, nearer colour first.
    idx, base = _two_product_index()
    idx.add(PhotoRows(["a", "b"], ["pants", "pants"], [{}, {}], np.stack([base, base]), np.stack([other, col])))
    assert [h.id for h in ranked(idx, base, col, "pants").hits] == ["b", "a"]
    # Shared attributes: same code and colour, more shared attributes first (a term off by default).
    idx, base = _two_product_index()
    idx.add(
        PhotoRows(
            ["a", "b"],
            ["pants", "pants"],
            [{"colour": "blue"}, {"colour": "red", "fit": "slim"}],
            np.stack([base, base]),
            np.stack([col, col]),
        )
    )
    hits = ranked(idx, base, col, "pants", {"colour": "red", "fit": "slim"}, RankingConfig(w_shared=0.25)).hits
    assert [h.id for h in hits] == ["b", "a"]
    assert hits[0].shared_attributes == ("colour=red", "fit=slim") and hits[1].shared_attributes == ()
    # Ties are broken by id.
    idx, base = _two_product_index()
    idx.add(PhotoRows(["z", "m"], ["pants", "pants"], [{}, {}], np.stack([base, base]), np.stack([col, col])))
    assert [h.id for h in ranked(idx, base, col, "pants").hits] == ["m", "z"]


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 5), st.floats(0, 5), st.floats(0, 5), st.integers(0, 2**31))
def test_score_is_the_documented_sum(wa, wc, ws, seed):
    idx, ids, cats, attrs, codes, colours = _index(n=60, seed=seed % 1000)
    q = {"colour": "red", "fit": "slim"}
    res = ranked(idx, codes[0], colours[0], cats[0], q, RankingConfig(w_appearance=wa, w_colour=wc, w_shared=ws), k=60)
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores)
    for h in res.hits:
        expect = wa * h.hamming / (CODE_BYTES * 8) + wc * h.colour_distance - ws * len(h.shared_attributes) / 2
        assert h.score == pytest.approx(expect, abs=1e-5)


def test_add_and_delete_visible_to_next_search():
    idx, ids, cats, attrs, codes, colours = _index()
    i = 3
    assert ranked(idx, codes[i], colours[i], cats[i], k=1).hits[0].id == ids[i]
    assert idx.delete([ids[i], "never-there"]) == 1
    assert ids[i] not in {h.id for h in ranked(idx, codes[i], colours[i], cats[i], k=MAX_K).hits}
    idx.add(PhotoRows(["new"], ["dress"], [{"colour": "red"}], codes[i : i + 1], colours[i : i + 1]))
    assert ranked(idx, codes[i], colours[i], "dress", k=1).hits[0].id == "new"
    # Re-adding an id replaces it, even across categories.
    idx.add(PhotoRows(["new"], ["pants"], [{}], codes[i : i + 1], colours[i : i + 1]))
    assert "new" not in {h.id for h in ranked(idx, codes[i], colours[i], "dress", k=MAX_K).hits}
    assert len(idx) == 200


def test_too_few_products_is_said_not_widened():
    idx, ids, cats, attrs, codes, colours = _index(n=30)
    res = ranked(idx, codes[0], colours[0], "skirt")
    assert res.hits == [] and "only 0 products in category 'skirt'" in res.note


def test_bad_queries_are_clear_errors():
    idx, ids, cats, attrs, codes, colours = _index(n=10)
    with pytest.raises(ValueError, match="unknown category 'sari'"):
        ranked(idx, codes[0], colours[0], "sari")
    with pytest.raises(ValueError, match="unknown category 'sari'"):  # the backend checks it too
        idx.shortlist(codes[0], "sari", Narrowing(), 10)
    for k in (0, MAX_K + 1, 2.5, True):  # a page size is checked where the narrowing is built
        with pytest.raises(ValueError, match=f"k must be an integer from 1 to {MAX_K}"):
            Narrowing.of(k=k)
    with pytest.raises(ValueError, match="unknown value 'teal'"):
        ranked(idx, codes[0], colours[0], "pants", {"colour": "teal"})
    with pytest.raises(ValueError, match="code has 3 bytes"):
        ranked(idx, codes[0][:3], colours[0], "pants")
    with pytest.raises(ValueError, match="code has 3 bytes"):
        idx.named(ids[:2], codes[0][:3], Narrowing())


def test_snapshot_round_trip(tmp_path):
    idx, ids, cats, attrs, codes, colours = _index()
    idx.delete(ids[:5])
    idx.save(tmp_path / "ram.npz")
    back = InvertedIndex.load(tmp_path / "ram.npz")
    assert len(back) == len(idx) and back.category_sizes() == idx.category_sizes()
    for i in range(5, 200, 23):
        assert (
            ranked(back, codes[i], colours[i], cats[i], attrs[i]).hits
            == ranked(idx, codes[i], colours[i], cats[i], attrs[i]).hits
        )


def _priced_index(n=200, seed=1):
    idx, ids, cats, attrs, codes, colours = _index(n=n, seed=seed)
    rng = np.random.default_rng(seed)
    prices = [None if i % 7 == 0 else float(rng.integers(5, 100)) for i in range(n)]
    idx.add(PhotoRows(ids, cats, attrs, codes, colours, prices=prices))  # re-adding replaces: now with prices
    return idx, ids, cats, attrs, codes, colours, prices


def _brute_ranked(idx, code, colour, category, attributes, keep):
    """Every product of ``category`` that ``keep`` accepts, ranked by the index's own score: the reference."""
    assert idx.category_sizes()[category] <= MAX_K  # one page holds them all
    everything = ranked(idx, code, colour, category, attributes, k=MAX_K).hits
    return [h.id for h in everything if keep(h.id)]


def test_filters_and_a_price_range_narrow_to_exactly_the_matching_products():
    idx, ids, cats, attrs, codes, colours, prices = _priced_index()
    by_id = {i: (c, a, p) for i, c, a, p in zip(ids, cats, attrs, prices)}
    q = {"colour": "red"}
    for filters, lo, hi in [
        ({"colour": "blue"}, None, None),
        ({"colour": "red", "fit": "slim"}, None, None),
        ({}, 20.0, None),
        ({}, None, 50.0),
        ({"fit": "loose"}, 30.0, 60.0),
        ({}, 40.0, 40.0),
    ]:

        def keep(i, filters=filters, lo=lo, hi=hi):
            _c, a, p = by_id[i]
            if any(a.get(g) != v for g, v in filters.items()):
                return False
            if (lo is not None or hi is not None) and p is None:
                return False  # an unknown price is out of any range
            return (lo is None or p >= lo) and (hi is None or p <= hi)

        want = _brute_ranked(idx, codes[0], colours[0], "pants", q, keep)
        res = ranked(idx, codes[0], colours[0], "pants", q, k=MAX_K, filters=filters, price_min=lo, price_max=hi)
        assert [h.id for h in res.hits] == want, (filters, lo, hi)
        assert res.candidates == len(want)
        # the same photo pinned by named_hits obeys the same narrowing
        same = pinned(idx, ids, codes[0], colours[0], q, filters=filters, price_min=lo, price_max=hi)
        assert {h.id for h in same} == {i for i in ids if keep(i)}
    assert ranked(idx, codes[0], colours[0], "pants", q, filters={"colour": "blue"}, price_min=1e9).hits == []


def test_offset_pages_through_the_same_ranking():
    idx, ids, cats, attrs, codes, colours = _index(n=300)
    ten = RankingConfig(shortlist=10)
    whole = ranked(idx, codes[1], colours[1], cats[1], attrs[1], ten, k=60).hits
    pages = [ranked(idx, codes[1], colours[1], cats[1], attrs[1], ten, k=15, offset=o).hits for o in (0, 15, 30, 45)]
    assert [h for page in pages for h in page] == whole
    assert ranked(idx, codes[1], colours[1], cats[1], attrs[1], ten, k=5, offset=MAX_OFFSET).hits == []
    for offset in (-1, MAX_OFFSET + 1):
        with pytest.raises(ValueError, match=f"offset must be an integer from 0 to {MAX_OFFSET}, got {offset}"):
            Narrowing.of(offset=offset)


def test_each_hit_carries_the_products_own_attributes():
    idx, ids, cats, attrs, codes, colours = _index()
    own = dict(zip(ids, attrs))
    for h in ranked(idx, codes[2], colours[2], cats[2], {"colour": "red"}, k=50).hits:
        assert dict(h.attributes) == own[h.id]
        assert [g for g, _v in h.attributes] == ["colour", "fit"]  # schema order


def test_an_unknown_filter_is_a_clear_error():
    idx, ids, cats, attrs, codes, colours = _index(n=20)
    # refused where the narrowing is built ...
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        Narrowing.of(filters={"colour": "teal"})
    with pytest.raises(ValueError, match="unknown attribute group 'shape'"):
        Narrowing.of(filters={"shape": "round"})
    # ... and by the backend, should an unchecked one reach it
    for group, value in (("colour", "teal"), ("shape", "round")):
        unchecked = Narrowing(filters={group: value})
        with pytest.raises(ValueError, match=f"unknown filter {group}={value}"):
            idx.shortlist(codes[0], "pants", unchecked, 10)
        with pytest.raises(ValueError, match=f"unknown filter {group}={value}"):
            idx.named(ids, codes[0], unchecked)


def test_prices_survive_the_snapshot_and_an_old_format_is_refused(tmp_path):
    import json

    idx, ids, cats, attrs, codes, colours, prices = _priced_index()
    idx.save(tmp_path / "ram.npz")
    back = InvertedIndex.load(tmp_path / "ram.npz")
    kw = {"k": MAX_K, "price_min": 10.0, "price_max": 60.0}
    assert (
        ranked(back, codes[0], colours[0], "dress", **kw).hits == ranked(idx, codes[0], colours[0], "dress", **kw).hits
    )
    with np.load(tmp_path / "ram.npz") as z:
        arrays = {name: z[name] for name in z.files if not name.endswith("/prices")}
    meta = json.loads(arrays["meta"].tobytes())
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "format": 2}).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match="of format 2, not 4"):
        InvertedIndex.load(tmp_path / "old.npz")
