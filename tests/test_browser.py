"""The search page in a real browser: Debian's Chromium driven by Playwright against a served index.

The server is a real waitress process on a free port, waited on through /api/health. Its engine
is the real ``SearchEngine`` with the model stand-ins of ``tests/standin.py``, over the synthetic
catalogue with its own attribute labels (``--labelled``), so this tests the page and the API, not
the models: the stand-ins are simple (a guided or drawn search reads a central box; auto finds a
catalogue photo's true garments and reads each as its true category, ``--garments``, and guesses
any other photo's category from its brightness), and a catalogue photo finds its own product first
(the engine's same-photo rule). Every API answer the page and the test receive is checked against
``webui/openapi.json``. Screenshots of every state go to ``test-artifacts/browser/``.

Chromium comes from ``make browser`` (``make test`` runs it first): without /usr/bin/chromium
the tests skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from foundation.schema import default_schema
from tests.webui_api_fixtures import same_photo

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-token"
SERVER_START_S = 60


def _unavailable(reason: str) -> None:
    """Skip for want of the browser; under CI (``CI=true``), where it must be there, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser test must run under CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"no {CHROMIUM}: `make browser` installs Debian's chromium (`make test` does it first)")
    try:
        sync_api = pytest.importorskip("playwright.sync_api")
    except pytest.skip.Exception as exc:
        _unavailable(f"{exc}: `make install` installs the test extra")
    pw = sync_api.sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    except Exception as exc:
        pw.stop()
        _unavailable(f"Chromium does not start under Playwright: {exc}")
    yield b
    b.close()
    pw.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> dict:
    """Poll /api/health until it answers; fail early when the server process dies."""
    import time

    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "api/health", timeout=2) as r:
                return json.load(r)
        except (urllib.error.URLError, ConnectionError):
            try:
                proc.wait(timeout=0.1)  # the pause between polls, and a check that it still runs
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-2000:]}") from None
    raise RuntimeError(f"the server did not answer /api/health within {SERVER_START_S}s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def rows(synth_dump) -> list[dict]:
    return [json.loads(line) for line in synth_dump.read_text().splitlines()]


@pytest.fixture(scope="module")
def examples(synth_dump, rows, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The page's example photos (their folder, and the catalogue row each is): the last two catalogue
    photos of two or more garments of distinct categories, as the stand-ins find only a catalogue
    photo's garments."""
    from webui.examples import write_manifest

    folder = tmp_path_factory.mktemp("examples")
    chosen = [r for r in rows if len(r["boxes"]) >= 2 and len({b[4] for b in r["boxes"]}) == len(r["boxes"])][-2:]
    for n, row in enumerate(chosen, 1):
        (folder / f"look-{n}.jpg").write_bytes((synth_dump.parent / row["image"]).read_bytes())
    write_manifest(
        folder, [{"image": f"look-{n}.jpg", "categories": [b[4] for b in r["boxes"]]} for n, r in enumerate(chosen, 1)]
    )
    return folder, chosen


@pytest.fixture(scope="module")
def server(synth_dump, examples, tmp_path_factory):
    port = _free_port()
    folder = tmp_path_factory.mktemp("server")
    log = folder / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.standin", str(synth_dump), str(folder / "index"), "--labelled", "--garments"]
            + ["--port", str(port), "--token", TOKEN, "--examples", str(examples[0])],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        health = _wait_healthy(proc, url, log)
        assert health == {"status": "ok", "products": 120}
        assert f"serving 120 products at {url}" in log.read_text()  # the address a user is told
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _check(api_contract, method: str, url: str, status: int, headers: dict, body: bytes) -> None:
    """One response the test received, checked against webui/openapi.json (conftest.py)."""
    api_contract.check(method, unquote(urlsplit(url).path), status, headers.get("content-type"), body)


@pytest.fixture
def page(browser, server, api_contract):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    context.set_default_timeout(30_000)  # generous: the CPU is shared while tests run
    p = context.new_page()
    problems: list[str] = []
    responses: list = []  # every API answer the page received, checked against the document below
    p.on("response", lambda r: responses.append(r) if "/api/" in r.url else None)
    p.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # Failed API calls log a resource error by design; anything else (script errors, CSP violations) is a bug.
    p.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    p.goto(server)
    # the list is enabled once the categories came; a selector, not wait_for_function, whose polling
    # evaluates a string, which the page's Content-Security-Policy (no 'unsafe-eval') refuses
    p.wait_for_selector("#category:enabled", state="attached")  # hidden until "Pick a category"
    yield p
    fetched: set[str] = set()
    for r in responses:
        body = b"" if r.status == 304 else r.body()
        if r.status == 200 and not body and r.url in fetched:
            continue  # Chromium's cached copy after the server's 304: its bytes were checked when fetched
        _check(api_contract, r.request.method, r.url, r.status, r.headers, body)
        fetched.add(r.url)
    context.close()
    assert not problems, problems


def _is_search(response) -> bool:
    return response.url.endswith("/api/search") and response.request.method == "POST"


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _drag_box(page, box) -> None:
    """Drag a rectangle over the photo, ``box`` in the photo's pixels."""
    bb = page.locator("#overlay").bounding_box()
    nw, nh = page.evaluate(
        "[document.getElementById('photo').naturalWidth, document.getElementById('photo').naturalHeight]"
    )
    sx, sy = bb["width"] / nw, bb["height"] / nh
    x0, y0, x1, y1 = box
    page.mouse.move(bb["x"] + x0 * sx + 1, bb["y"] + y0 * sy + 1)
    page.mouse.down()
    page.mouse.move(bb["x"] + (x0 + x1) / 2 * sx, bb["y"] + (y0 + y1) / 2 * sy, steps=3)
    page.mouse.move(bb["x"] + x1 * sx - 1, bb["y"] + y1 * sy - 1, steps=3)
    page.mouse.up()


def _cards(page, expected: list[dict]) -> list[str]:
    from playwright.sync_api import expect

    expect(page.locator(".card")).to_have_count(len(expected))
    ids = page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.id)")
    assert ids == [r["id"] for r in expected]
    assert page.locator(".card .title").all_text_contents() == [r["title"] for r in expected]
    return ids


def test_three_options(page, rows, synth_dump):
    from playwright.sync_api import expect

    row = next(r for r in rows if len(r["boxes"]) >= 2)
    photo = synth_dump.parent / row["image"]

    # 1. upload: auto results appear, with the recognised garment drawn on the photo
    with page.expect_response(_is_search) as info:
        page.set_input_files("#file", str(photo))
    auto = info.value.json()  # the query echoes what the page sent: option, category, box
    assert auto["query"]["option"] == "auto"
    _cards(page, auto["results"])
    expect(page.locator("#seen")).to_have_attribute("data-option", "auto")
    expect(page.locator("#seen")).to_contain_text(auto["query"]["category"].replace("_", " "))
    # a chip per attribute group of the category (and any other seen), schema-ordered, each a select
    seen = {a["group"] for a in auto["query"]["attributes"]}
    schema = default_schema()
    groups = [g.name for g in schema.attribute_groups if schema.applies(g, auto["query"]["category"]) or g.name in seen]
    assert page.locator("#attributes .chip").evaluate_all("cs => cs.map(c => c.dataset.group)") == groups
    assert page.locator("#attributes .chip select").count() == len(groups)
    assert page.locator(".card").first.locator(".shared-chip").count() == len(auto["results"][0]["shared_attributes"])
    _shot(page, "1-auto")

    # 2. pick a category: the results change to it
    with page.expect_response(_is_search) as info:
        page.check("input[name=option][value=guided]")
    # the list starts at what the model saw
    assert info.value.json()["query"]["category"] == auto["query"]["category"]
    chosen = "pants" if auto["query"]["category"] != "pants" else "shoes"
    with page.expect_response(_is_search) as info:
        page.select_option("#category", chosen)
    guided = info.value.json()
    assert guided["query"]["option"] == "guided" and guided["query"]["category"] == chosen
    _cards(page, guided["results"])
    # the photo's own product first, whatever its category (the engine's same-photo rule), then the category
    assert same_photo(guided["query"]) == row["id"] and guided["results"][0]["id"] == row["id"]
    shown = page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.category)")
    assert set(shown[1:]) == {chosen}, shown
    expect(page.locator("#seen")).to_have_attribute("data-category", chosen)
    _shot(page, "2-guided")

    # 3. draw a rectangle around each garment in turn: the results follow the box
    answers = []
    for i, (*box, _category) in enumerate(row["boxes"][:2]):
        with page.expect_response(_is_search) as info:
            _drag_box(page, box)
        rect = info.value.json()
        assert rect["query"]["option"] == "rectangle"
        assert all(abs(a - b) <= 2 for a, b in zip(rect["query"]["roi"], box)), (rect["query"]["roi"], box)
        answers.append(_cards(page, rect["results"]))
        assert page.locator("input[name=option][value=rectangle]").is_checked()
        assert answers[-1][0] == row["id"]  # the very photo: its own product first, whatever the box
        _shot(page, f"3-rectangle-{i + 1}")
    assert answers[0][1:] != answers[1][1:]  # the rest follows the box

    # "more like this" searches with that product's photo, guided by its category
    first = rect["results"][0]
    with page.expect_response(_is_search) as info:
        page.locator(".card .more").first.click()
    more = info.value.json()
    assert more["query"]["option"] == "guided" and more["query"]["category"] == first["category"]
    _cards(page, more["results"])
    expect(page.locator("#photo-size")).to_have_text("256 × 256 px")
    _shot(page, "4-more-like-this")


def _edit_target(rows):
    """A dress of the catalogue and a (colour, sleeve length) of other dresses unlike its own in both
    (so that the edits leave out the photo's own product, which the engine would otherwise rank first)."""
    dresses = [r for r in rows if r["attributes"]["category"] == "dress"]
    for row in dresses:
        own = row["attributes"]
        for other in dresses:
            pair = other["attributes"]["colour"], other["attributes"]["sleeve_length"]
            if pair[0] != own["colour"] and pair[1] != own["sleeve_length"]:
                return row, pair
    raise AssertionError("the synthetic catalogue has no two dresses unlike in colour and sleeve length")


def test_editing_attributes_narrows_the_results_without_sending_the_photo_again(page, rows, synth_dump):
    from playwright.sync_api import expect

    row, (colour, sleeve) = _edit_target(rows)
    page.check("input[name=option][value=guided]")  # no photo yet: nothing is sent
    page.select_option("#category", "dress")
    with page.expect_response(_is_search) as info:
        page.set_input_files("#file", str(synth_dump.parent / row["image"]))
    first = info.value.json()
    assert first["query"]["category"] == "dress" and first["query"]["id"]
    assert first["results"][0]["id"] == row["id"]  # the very photo: its own product first
    seen = {a["group"]: a["value"] for a in first["query"]["attributes"]}
    assert "colour" not in seen and "sleeve_length" not in seen  # the stand-in attribute model sees none
    expect(page.locator("#attr-colour")).to_have_value("")  # "any"

    with page.expect_response(_is_search) as info:
        page.select_option("#attr-colour", colour)
    sent = info.value.request.post_data_buffer
    assert b'name="query_id"' in sent and b'name="image"' not in sent  # the photo is not sent again
    assert b"colour=" + colour.encode() in sent
    by_colour = info.value.json()
    assert by_colour["query"]["filters"] == [f"colour={colour}"]
    _cards(page, by_colour["results"])

    with page.expect_response(_is_search) as info:
        page.select_option("#attr-sleeve_length", sleeve)
    edited = info.value.json()
    assert edited["query"]["filters"] == [f"colour={colour}", f"sleeve_length={sleeve}"]
    assert edited["results"], edited["query"]
    for hit in edited["results"]:
        assert hit["attributes"]["colour"] == colour and hit["attributes"]["sleeve_length"] == sleeve, hit
    assert row["id"] not in [h["id"] for h in edited["results"]]  # its own colour is another
    _cards(page, edited["results"])
    shown = page.locator(".card").evaluate_all("cs => cs.map(c => JSON.parse(c.dataset.attributes))")
    assert all(a["colour"] == colour and a["sleeve_length"] == sleeve for a in shown), shown
    expect(page.locator("#narrowed")).to_be_visible()
    expect(page.locator("#narrowed")).to_have_attribute("data-filters", f"colour={colour} sleeve_length={sleeve}")
    expect(page.locator("#attributes .chip.edited")).to_have_count(2)
    expect(page.locator("#attr-sleeve_length")).to_have_value(sleeve)
    _shot(page, "8-edited-attributes")

    # a price range from the page: the same query id, narrowed by price too
    prices = sorted(h["price"] for h in edited["results"] if h.get("price") is not None)
    top = prices[len(prices) // 2]
    with page.expect_response(_is_search) as info:
        page.fill("#price-max", f"{top:g}")
        page.press("#price-max", "Tab")  # a change is sent when the field is left
    priced = info.value.json()
    assert priced["query"]["filters"] == [f"colour={colour}", f"sleeve_length={sleeve}", f"price_max={top:g}"]
    assert priced["results"] and all(h["price"] is not None and h["price"] <= top for h in priced["results"])
    _cards(page, priced["results"])
    with page.expect_response(_is_search) as info:
        page.fill("#price-max", "")
        page.press("#price-max", "Tab")
    assert info.value.json()["query"]["filters"] == [f"colour={colour}", f"sleeve_length={sleeve}"]

    # back to any colour: only the sleeve length narrows
    with page.expect_response(_is_search) as info:
        page.select_option("#attr-colour", "")
    assert info.value.json()["query"]["filters"] == [f"sleeve_length={sleeve}"]
    expect(page.locator("#attributes .chip.edited")).to_have_count(1)

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "9-edited-attributes-phone")


def _searches_sent(page) -> list[str]:
    """Every POST to /api/search the page sends from now on (Chromium does not show a body holding a
    file, so which carried the photo is counted by the server: ``_photo_searches``)."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/search") and r.method == "POST" else None)
    return sent


def _photo_searches(server: str) -> int:
    """The searches with a photo the server has answered (its /api/stats: auto, guided, rectangle; not re-runs)."""
    with urllib.request.urlopen(server + "api/stats", timeout=5) as r:
        searches = json.load(r)["server"]["searches"]
    return sum(v["count"] for option, v in searches.items() if option != "rerun")


def _shows_garment(page, row: dict, garment: dict) -> None:
    """The page shows ``garment``: its outline selected, its query, its results (its category's,
    but for the photo's own product, which the engine answers first)."""
    from playwright.sync_api import expect

    n, category = garment["garment"], garment["category"]
    outlines = page.locator("#garments .garment")
    expect(outlines.nth(n)).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#garments .garment[aria-pressed=true]")).to_have_count(1)
    expect(page.locator("#seen")).to_have_attribute("data-garment", str(n))
    expect(page.locator("#seen")).to_have_attribute("data-category", category)
    _cards(page, garment["results"])
    shown = page.locator(".card").evaluate_all("cs => cs.map(c => [c.dataset.id, c.dataset.category])")
    assert shown and all(c == category for pid, c in shown if pid != row["id"]), (category, shown)


def test_shop_the_look(page, server, rows, synth_dump):
    """Every garment of the photo outlined and named; another one's results at once, by click or key;
    its chips and price range narrow it alone, by query id and garment, without the photo."""
    from playwright.sync_api import expect

    row = next(r for r in rows if len(r["boxes"]) >= 3 and len({b[4] for b in r["boxes"]}) == len(r["boxes"]))
    sent = _searches_sent(page)
    with page.expect_response(_is_search) as info:
        page.set_input_files("#file", str(synth_dump.parent / row["image"]))
    answer = info.value.json()
    photos = _photo_searches(server)
    garments = answer["garments"]
    assert sorted(g["category"] for g in garments) == sorted(b[4] for b in row["boxes"])  # the stand-ins' truth
    assert answer["query"]["garment"] == 0 and [r["id"] for r in answer["results"]] == [
        r["id"] for r in garments[0]["results"]
    ]

    # every garment outlined over its box (scaled to the photo as shown) and named; the first selected
    outlines = page.locator("#garments .garment")
    expect(outlines).to_have_count(len(garments))
    photo = page.locator("#photo").bounding_box()
    nw, nh = page.evaluate(
        "[document.getElementById('photo').naturalWidth, document.getElementById('photo').naturalHeight]"
    )
    for n, g in enumerate(garments):
        name = g["category"].replace("_", " ")
        expect(outlines.nth(n)).to_have_accessible_name(f"garment {n + 1}: {name}")
        expect(outlines.nth(n)).to_have_text(f"{n + 1}{name}")
        expect(outlines.nth(n)).to_have_attribute("aria-pressed", "true" if n == 0 else "false")
        bb = outlines.nth(n).bounding_box()
        x0, y0, x1, y1 = g["roi"]
        want = (photo["x"] + x0 * photo["width"] / nw, photo["y"] + y0 * photo["height"] / nh)
        want += (want[0] + (x1 - x0) * photo["width"] / nw, want[1] + (y1 - y0) * photo["height"] / nh)
        if want[2] - want[0] >= 24 and want[3] - want[1] >= 24:  # smaller garments are a dot round the centre
            got = (bb["x"], bb["y"], bb["x"] + bb["width"], bb["y"] + bb["height"])
            assert all(abs(a - b) <= 1.5 for a, b in zip(got, want)), (n, got, want)
        tag = outlines.nth(n).locator(".garment-tag").bounding_box()  # the name is on the photo, not cut off
        assert photo["x"] <= tag["x"] and tag["x"] + tag["width"] <= photo["x"] + photo["width"] + 0.5, (n, tag)
        assert photo["y"] <= tag["y"] and tag["y"] + tag["height"] <= photo["y"] + photo["height"] + 0.5, (n, tag)
    expect(page.locator("#look-hint")).to_contain_text(f"{len(garments)} garments found")
    _shows_garment(page, row, garments[0])
    _shot(page, "10-look")

    # a click on another garment: its results at once, from the answer (no request at all)
    before = len(sent)
    outlines.nth(1).click()
    _shows_garment(page, row, garments[1])
    # the keyboard: Tab to the next garment, Enter; Shift+Tab back, Space
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.garment") == "2"
    page.keyboard.press("Enter")
    _shows_garment(page, row, garments[2])
    _shot(page, "11-look-garment-3")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Space")
    _shows_garment(page, row, garments[1])
    assert len(sent) == before  # shown at once: nothing sent

    # a chip of the selected garment: re-run by query id and garment, without the photo
    n, category = 1, garments[1]["category"]
    others = [
        r["attributes"]["colour"] for r in rows if r["attributes"]["category"] == category and r["id"] != row["id"]
    ]
    colour = max(set(others), key=others.count)
    with page.expect_response(_is_search) as info:
        page.select_option("#attr-colour", colour)
    body = info.value.request.post_data_buffer
    assert f'name="query_id"\r\n\r\n{answer["query"]["id"]}'.encode() in body
    assert b'name="garment"\r\n\r\n1\r\n' in body and b'name="image"' not in body
    narrowed = info.value.json()
    assert narrowed["query"]["garment"] == n and narrowed["query"]["category"] == category
    assert narrowed["query"]["filters"] == [f"colour={colour}"] and narrowed["results"]
    assert all(h["category"] == category and h["attributes"]["colour"] == colour for h in narrowed["results"])
    _shows_garment(page, row, narrowed["garments"][n])
    expect(page.locator("#attributes .chip.edited")).to_have_count(1)

    # and a price range: the same garment, narrowed by price too
    prices = sorted(h["price"] for h in narrowed["results"] if h.get("price") is not None)
    top = prices[len(prices) // 2]
    with page.expect_response(_is_search) as info:
        page.fill("#price-max", f"{top:g}")
        page.press("#price-max", "Tab")
    body = info.value.request.post_data_buffer
    assert b'name="garment"\r\n\r\n1\r\n' in body and b'name="image"' not in body
    priced = info.value.json()
    assert priced["query"]["garment"] == n and priced["query"]["filters"] == [f"colour={colour}", f"price_max={top:g}"]
    assert priced["results"] and all(h["category"] == category and h["price"] <= top for h in priced["results"])
    _shows_garment(page, row, priced["garments"][n])
    _shot(page, "12-look-narrowed")

    # the chips and the price range are the selected garment's: the first shows its own (none), at once
    before = len(sent)
    outlines.nth(0).click()
    _shows_garment(page, row, priced["garments"][0])
    expect(page.locator("#price-max")).to_have_value("")
    expect(page.locator("#attributes .chip.edited")).to_have_count(0)
    assert len(sent) == before
    # back to the narrowed one: asked again with its own narrowing
    with page.expect_response(_is_search) as info:
        outlines.nth(1).click()
    again = info.value.json()
    assert again["query"]["garment"] == n and again["query"]["filters"] == priced["query"]["filters"]
    _shows_garment(page, row, again["garments"][n])
    expect(page.locator("#price-max")).to_have_value(f"{top:g}")
    expect(page.locator("#attr-colour")).to_have_value(colour)
    assert _photo_searches(server) == photos  # the photo was never sent again

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "13-look-phone")

    # a mouse drag that starts on an outline still draws a box: one garment, the outlines gone
    page.set_viewport_size({"width": 1280, "height": 900})
    page.evaluate("window.scrollTo(0, 0)")  # the photo in view (the phone's layout scrolled the page)
    with page.expect_response(_is_search) as info:
        _drag_box(page, garments[2]["roi"])
    assert info.value.json()["query"]["option"] == "rectangle" and len(info.value.json()["garments"]) == 1
    expect(outlines).to_have_count(0)
    expect(page.locator("#look-hint")).to_be_hidden()


def test_an_example_is_searched_with_its_garments_outlined(page, examples):
    """A click (here Enter on the focused thumbnail) on an example searches its photo in auto mode,
    as an upload: every garment outlined, the first one's results shown."""
    from playwright.sync_api import expect

    _, chosen = examples
    buttons = page.locator("#examples .example")
    expect(buttons).to_have_count(len(chosen))
    expect(page.locator("#examples-title")).to_have_text("Try an example")
    widths = page.evaluate(
        "Promise.all(Array.from(document.querySelectorAll('#examples img')).map(i => i.decode().then(() => i.naturalWidth)))"
    )
    assert all(w > 0 for w in widths), widths  # every thumbnail shows its photo
    page.locator("input[name=option][value=guided]").check()  # an example is searched in auto mode all the same
    row = chosen[1]
    buttons.nth(1).focus()
    with page.expect_response(_is_search) as info:
        page.keyboard.press("Enter")
    answer = info.value.json()
    assert answer["query"]["option"] == "auto"
    assert sorted(g["category"] for g in answer["garments"]) == sorted(b[4] for b in row["boxes"])
    expect(page.locator("input[name=option][value=auto]")).to_be_checked()
    expect(page.locator("#garments .garment")).to_have_count(len(row["boxes"]))
    expect(page.locator("#look-hint")).to_contain_text(f"{len(row['boxes'])} garments found")
    expect(buttons.nth(1)).to_have_attribute("aria-current", "true")
    _shows_garment(page, row, answer["garments"][0])
    _shot(page, "14-example")
    page.locator("#garments .garment").nth(1).click()  # another garment of the example: its results
    _shows_garment(page, row, answer["garments"][1])


def test_errors_are_shown_clearly(page, tmp_path):
    from playwright.sync_api import expect

    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a shopping list, not a photo\n" * 10)
    with page.expect_response(_is_search) as info:
        page.set_input_files("#file", str(fake))
    assert info.value.status == 400
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-text")).to_contain_text("not an image")
    assert page.locator(".card").count() == 0
    _shot(page, "5-error")


def test_phone_width(page, rows, synth_dump):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 390, "height": 844})
    with page.expect_response(_is_search) as info:
        page.set_input_files("#file", str(synth_dump.parent / rows[3]["image"]))
    expect(page.locator(".card")).to_have_count(len(info.value.json()["results"]))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    card = page.locator(".card").first.bounding_box()
    assert card["width"] >= 140  # two readable columns, not a squeezed grid
    _shot(page, "6-phone")


def test_titles_are_shown_as_text(page, server, tmp_path, api_contract):
    from PIL import Image
    from playwright.sync_api import expect

    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> Red pants'
    photo = tmp_path / "red.png"
    red = Image.new("RGB", (120, 200), (250, 250, 250))  # a uniform photo is refused as a placeholder
    red.paste((200, 30, 35), (20, 20, 100, 180))
    red.save(photo)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = page.request.post(
        server + "api/products",
        headers=auth,
        multipart={
            "id": "hostile-1",
            "title": hostile,
            "image": {"name": "red.png", "mimeType": "image/png", "buffer": photo.read_bytes()},
        },
    )
    assert r.status == 201, r.text()
    _check(api_contract, "POST", r.url, r.status, r.headers, r.body())
    try:
        page.check("input[name=option][value=guided]")  # no photo yet: nothing is sent
        page.select_option("#category", "pants")
        with page.expect_response(_is_search) as info:
            page.set_input_files("#file", str(photo))
        assert info.value.json()["query"]["category"] == "pants"
        assert hostile in [h["title"] for h in info.value.json()["results"]]
        expect(page.locator(".card[data-id='hostile-1'] .title")).to_have_text(hostile)
        assert page.evaluate("window.pwned") is None
        assert page.locator("#grid script, #grid img[src='x']").count() == 0
        _shot(page, "7-escaped-title")
    finally:
        r = page.request.delete(server + "api/products/hostile-1", headers=auth)
        _check(api_contract, "DELETE", r.url, r.status, r.headers, r.body())
        assert r.status == 200, r.text()


def test_served_upload_over_the_limit_is_a_json_413(server, api_contract):
    """Through waitress, not the test client: the body is read by the server before Flask refuses it."""
    import http.client

    u = urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'
        + bytes(17 * 2**20)
        + b"\r\n--b--\r\n"
    )
    conn.request("POST", "/api/search", body=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    r = conn.getresponse()
    data = r.read()
    _check(api_contract, "POST", server + "api/search", r.status, {"content-type": r.getheader("Content-Type")}, data)
    assert r.status == 413
    assert "16 MiB upload limit" in json.loads(data)["error"]
    conn.close()
    with urllib.request.urlopen(server + "api/health", timeout=5) as h:
        data = h.read()
        _check(api_contract, "GET", h.url, h.status, {"content-type": h.headers["Content-Type"]}, data)
        assert json.loads(data)["status"] == "ok"
