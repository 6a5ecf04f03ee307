"""Live re-indexing: `fashion-search index` into the directory a server serves is loaded without a
restart, swapped in while searches run through it, none failing (the indexer runs in its own
process, as it does for a shop)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from indexer.bulk import BulkConfig, build_index
from indexer.store import PROGRESS_JSON, Store
from search.engine import SearchEngine, load_ram_index
from search.query import Query
from tests.indexer_fakes import fake_describer, fake_models
from webui.app import create_app
from webui.reload import IndexWatcher

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 120

_REINDEX = """
import sys
sys.path.insert(0, {root!r})
from indexer.bulk import BulkConfig, build_index
from tests.indexer_fakes import fake_describer
config = BulkConfig(workers=0, batch_size=2, progress=False, delete_missing=True)
build_index({dump!r}, {models!r}, {out!r}, config, describer=fake_describer({models!r}))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return fake_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def catalogue(synth_dump, models, tmp_path) -> dict:
    """An index of products 0-9; a new dump of products 4-19 (4 gone, 10 new) to re-index it with."""
    rows = [json.loads(line) for line in synth_dump.read_text().splitlines()[:20]]
    for r in rows:
        r["image"] = str(synth_dump.parent / r["image"])
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    new.write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    index = tmp_path / "index"
    build_index(old, models, index, BulkConfig(workers=0, progress=False), describer=fake_describer(models))
    return {"rows": rows, "index": index, "new": new}


def _wait(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {DEADLINE_S} s")
        time.sleep(0.02)


@pytest.mark.slow  # searches on three threads through a bulk run in another process: ~13 s
def test_a_finished_bulk_run_is_swapped_in_while_searches_run(catalogue, models, checked_client):
    rows, index = catalogue["rows"], catalogue["index"]
    ram = load_ram_index(index)  # before the store opens: LMDB opens an environment once a process
    store = Store(index, readonly=True)
    engine = SearchEngine(describer=fake_describer(models), store=store, index=ram)
    app = create_app({"ENGINE": engine, "TESTING": True, "RELOAD_S": 0.05})
    client = checked_client(app)
    assert client.get("/api/index").json["built"] == 1 and len(engine) == 10
    photos = [(Path(r["image"]).read_bytes(), r.get("category") or "t-shirt") for r in rows[:6]]
    served, failures, stop = [], [], threading.Event()

    def shopper(n: int) -> None:
        own = app.test_client()
        i = n
        while not stop.is_set():
            data, _category = photos[i % len(photos)]
            r = own.post("/api/search", data={"image": (io.BytesIO(data), "q.jpg"), "option": "auto"})
            if r.status_code != 200:
                failures.append((r.status_code, r.get_data(as_text=True)[:200]))
            else:
                ids = [h["id"] for h in r.json["results"]]
                if len(ids) != len(set(ids)):
                    failures.append(("twice", ids))
                served.append(time.monotonic())
            i += 1

    threads = [threading.Thread(target=shopper, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        script = _REINDEX.format(root=str(ROOT), dump=str(catalogue["new"]), models=str(models), out=str(index))
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE_S)
        assert proc.returncode == 0, proc.stderr[-2000:]
        _wait(lambda: client.get("/api/index").json["built"] == 2, "the server to load the new index")
        swapped = time.monotonic()
        _wait(lambda: sum(at > swapped for at in served) >= 20, "searches on the new index")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    assert sum(t0 <= at <= swapped for at in served) > 0  # searches were served while it ran and swapped
    status = client.get("/api/index").json
    assert status["products"] == 16 and status["reload_error"] is None and status["reload_s"] == 0.05
    assert status["indexing"]["state"] == "done" and status["indexing"]["done"] == 16
    run = status["indexing"]
    assert (run["added"], run["updated"], run["unchanged"], run["indexed"]) == (10, 0, 6, 10)
    (reload,) = status["reloads"]
    assert reload["was"] == 10 and reload["products"] == 16
    new_photo, gone_photo = Path(rows[15]["image"]).read_bytes(), Path(rows[0]["image"]).read_bytes()
    assert engine.search(Query.search(new_photo)).results[0].id == rows[15]["id"]  # the new one is found
    found = [r.id for r in engine.search(Query.search(gone_photo, k=50)).results]
    assert rows[0]["id"] not in found and engine.product(rows[0]["id"]) is None  # the removed one is gone
    app.extensions["fashion_search"].watcher.stop()
    engine.close()


def test_a_run_still_going_or_killed_is_not_loaded(catalogue, models):
    index = catalogue["index"]
    ram = load_ram_index(index)
    with Store(index, readonly=True) as store:
        engine = SearchEngine(describer=fake_describer(models), store=store, index=ram)
        assert engine.refresh() is None  # nothing finished since it was loaded
        progress = json.loads((index / PROGRESS_JSON).read_text())
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        (index / PROGRESS_JSON).write_text(json.dumps({**progress, "state": "running", "pid": int(dead.stdout)}))
        assert engine.index_status()["indexing"]["state"] == "stopped"  # killed: a re-run resumes it
        (index / PROGRESS_JSON).write_text(json.dumps({**progress, "state": "running", "pid": os.getpid()}))
        assert engine.index_status()["indexing"]["state"] == "running"
        assert engine.refresh() is None and len(engine) == 10


def test_a_failed_load_keeps_the_old_index_serving():
    calls = []

    class Broken:
        def refresh(self):
            calls.append(1)
            raise OSError("disk on fire")

    watcher = IndexWatcher(Broken(), 0.01).start()
    try:
        _wait(lambda: len(calls) >= 2, "two refresh attempts")
    finally:
        watcher.stop()
    assert watcher.last_error == "OSError: disk on fire"
    with pytest.raises(ValueError, match="reload interval"):
        IndexWatcher(Broken(), 0)


def test_new_models_load_while_searches_wait_and_none_fails(catalogue, models, monkeypatch):
    """A run with other models: they load under the gate (search.gate), since building a feature
    extractor traces with torch.fx, which breaks a forward pass running meanwhile on another thread."""
    index = catalogue["index"]
    ram = load_ram_index(index)
    store = Store(index, readonly=False)
    describer = fake_describer(models)
    describer.signature = "the models before"
    engine = SearchEngine(describer=describer, store=store, index=ram)
    loads = []

    def load(cls, path, device="cpu", **_kw):
        loads.append(Path(path))
        return fake_describer(models)  # builds a feature extractor with torch.fx, as every real load does

    monkeypatch.setattr("indexer.describe.Describer.load", classmethod(load))
    photo = Path(catalogue["rows"][0]["image"]).read_bytes()
    served, failures, stop = [], [], threading.Event()

    def shopper() -> None:
        while not stop.is_set():
            try:
                engine.search(Query.search(photo, "auto"))
                served.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - any failure fails the test
                failures.append(repr(exc))

    threads = [threading.Thread(target=shopper) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: len(served) >= 5, "searches before the swap")
        store.mark_built()
        done = engine.refresh()
        after = len(served)
        _wait(lambda: len(served) >= after + 10, "searches after the swap")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        engine.close()
    assert failures == [] and loads == [index / "models"]
    assert done["models_changed"] and engine.describer is not describer
