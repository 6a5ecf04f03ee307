"""``index --engine ray``: Ray Data in local mode (2 CPUs) writes the local run's store, byte for byte.

Ray starts once per session (about 6 s) and each run starts its actor pool, so these tests are
``slow``; they skip, saying why, where Ray cannot be imported or started.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from indexer.bulk import BulkConfig, build_index
from indexer.store import Store
from tests.indexer_fakes import fake_describer
from tests.test_bulk import messy_dump, models  # noqa: F401 - the bulk tests' fixtures, shared

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VARYING = ("seconds", "images_per_s", "products_per_s", "stage_seconds", "stage_share")  # timings, not contents


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[test]')")
    from indexer.ray_bulk import start_ray

    try:
        start_ray(num_cpus=2, pythonpath=str(ROOT))  # the workers import the tests' stand-ins from here
    except Exception as exc:  # noqa: BLE001 - whatever stops Ray here, say it and skip
        pytest.skip(f"Ray cannot start on this machine: {exc}")
    yield ray
    ray.shutdown()


def _raw(index: Path) -> dict:
    """Every stored byte: id -> (record, thumbnail)."""
    with Store(index) as store, store.env.begin() as txn:
        records = {bytes(k): bytes(v) for k, v in txn.cursor(db=store._products)}
        thumbs = {bytes(k): bytes(v) for k, v in txn.cursor(db=store._thumbs)}
    return {k: (v, thumbs.get(k)) for k, v in records.items()}


def _report(index: Path) -> dict:
    report = json.loads((index / "report.json").read_text())
    report["summary"] = {k: v for k, v in report["summary"].items() if k not in VARYING}
    return report


def _ray_run(dump, models_dir, out, **kw):
    from indexer.ray_bulk import RayConfig, build_index_ray

    config = BulkConfig(batch_size=4, progress=False, **kw)
    return build_index_ray(dump, models_dir, out, config, RayConfig(actors=2), describer_factory=fake_describer)


def test_ray_writes_the_local_runs_store_byte_for_byte(ray_local, messy_dump, models, tmp_path, monkeypatch):  # noqa: F811
    import indexer.ray_bulk

    monkeypatch.setattr(indexer.ray_bulk, "WAVE", 10)  # waves of 10 rows: local batches of 4 span them
    dump, good, bad = messy_dump
    local = build_index(
        dump,
        models,
        tmp_path / "local",
        BulkConfig(workers=2, batch_size=4, progress=False),
        describer=fake_describer(models),
    )
    ray = _ray_run(dump, models, tmp_path / "ray")
    assert {k: v for k, v in ray.items() if k not in VARYING} == {k: v for k, v in local.items() if k not in VARYING}
    assert _raw(tmp_path / "ray") == _raw(tmp_path / "local") and len(_raw(tmp_path / "ray")) == len(good)
    # the same bad rows, skipped images, placeholders and duplicates, in the same order
    assert _report(tmp_path / "ray")["skipped"] == _report(tmp_path / "local")["skipped"]
    assert _report(tmp_path / "ray")["duplicates"] == _report(tmp_path / "local")["duplicates"]
    assert {s["id"] for s in _report(tmp_path / "ray")["skipped"]} >= set(bad)
    assert (tmp_path / "ray" / "index.json").read_text() == (tmp_path / "local" / "index.json").read_text()


def test_a_ray_rerun_skips_what_is_stored_and_follows_a_changed_dump(ray_local, messy_dump, models, tmp_path):  # noqa: F811
    dump, good, _bad = messy_dump
    first = _ray_run(dump, models, tmp_path / "ray")
    again = _ray_run(dump, models, tmp_path / "ray")
    assert first["indexed"] == len(good) and again["indexed"] == 0 and again["unchanged"] == len(good)
    # a changed title, a removed product: Ray and local answer the same
    rows = dump.read_text().splitlines()
    changed = json.loads(rows[2]) | {"title": "a new title"}
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([rows[0], rows[1], json.dumps(changed), *rows[4:]]) + "\n")
    shutil.copytree(tmp_path / "ray", tmp_path / "local")
    ray = _ray_run(edited, models, tmp_path / "ray", delete_missing=True)
    local = build_index(
        edited,
        models,
        tmp_path / "local",
        BulkConfig(batch_size=8, progress=False, delete_missing=True),
        describer=fake_describer(models),
    )
    assert ray["updated"] == local["updated"] == 1 and ray["deleted"] == local["deleted"] == 1
    assert _raw(tmp_path / "ray") == _raw(tmp_path / "local")


def test_cli_flags_of_the_ray_engine_are_checked(tmp_path, capsys):
    from cli.main import main

    assert (
        main(
            [
                "index",
                str(tmp_path / "d.jsonl"),
                "--models",
                str(tmp_path),
                "--out",
                str(tmp_path / "i"),
                "--actors",
                "3",
            ]
        )
        == 2
    )
    assert "--address, --actors and --actor-threads are only used with --engine ray" in capsys.readouterr().err
