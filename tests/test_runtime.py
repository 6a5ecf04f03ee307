"""The onnx runtime: each model's exported graph computes what its torch module does, the graph
cache follows the model file, and a missing graph is an error that names the export command.

The models are small, randomly initialised MobileNetV2s (48-96 px) saved to a temporary models
directory; each graph is exported once per module (the exporter takes seconds per model).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# Each graph export takes seconds (about 45 s for the file): the full suite runs it, the fast lane not.
pytestmark = pytest.mark.slow

from appearance.model import ONNX_GRAPH, AppearanceCoder, CodeNetwork  # noqa: E402
from attributes.model import AttributeModelConfig, build_attribute_model  # noqa: E402
from attributes.predict import AttributePredictor, encoder_graph  # noqa: E402
from detector.model import DetectorConfig, build_detector, class_names  # noqa: E402
from detector.predict import BACKBONE_GRAPH, GarmentDetector, OnnxBackbone  # noqa: E402
from detector.train import DetectorTrainConfig  # noqa: E402
from foundation.modelfiles import ModelFile, save_model  # noqa: E402
from foundation.runtime import GraphMissing, OnnxModule, check_runtime  # noqa: E402
from foundation.schema import default_schema  # noqa: E402
from indexer.describe import Describer  # noqa: E402
from indexer.graphs import calibration_photos, copy_graphs, current_graphs, export_graphs  # noqa: E402

SCHEMA = default_schema()
PREP = {"image_size": 48, "resize": "squash", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# Bits a code may differ by between the runtimes: a bit flips only where a feature lies within
# float rounding (~1e-6) of its median; measured 0 of 1376 on these photos. Bound: 1 % of the bits.
HAMMING_SHARE = 0.01
FEATURE_ATOL = 1e-4  # features of order 0.1-1; the runtimes' sums differ by ~1e-6


def _photos(n: int, seed: int) -> list[Image.Image]:
    """Smooth random photos (blurred noise at several scales), so features vary as a photo's do."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        noise = rng.integers(-40, 40, (60, 80, 3))
        big = np.asarray(Image.fromarray(small).resize((80, 60), Image.Resampling.BICUBIC), np.int64)
        out.append(Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)))
    return out


def _save_appearance(models_dir, seed: int) -> AppearanceCoder:
    torch.manual_seed(seed)
    coder = AppearanceCoder(CodeNetwork("mobilenet_v2", pretrained="none"), image_size=48)
    coder.fit_median(_photos(16, seed=100 + seed))
    coder.save(models_dir, schema=SCHEMA)
    return coder


def _save_attributes(models_dir) -> None:
    torch.manual_seed(1)
    cfg = AttributeModelConfig(backbone="mobilenet_v2", vocab_size=len(SCHEMA.tokens), embed_dim=16, hidden_dim=32)
    model = build_attribute_model(cfg, schema=SCHEMA).eval()
    contents = ModelFile(state_dicts={"model": model.state_dict()}, config={"model": cfg.to_dict()}, preprocessing=PREP)
    save_model(models_dir, "attributes", contents, schema=SCHEMA)


def _save_detector(models_dir) -> None:
    torch.manual_seed(2)
    cfg = DetectorConfig(min_size=64, max_size=96, pretrained="none")
    model = build_detector(cfg, num_classes=len(class_names(SCHEMA))).eval()
    contents = ModelFile(
        state_dicts={"model": model.state_dict()},
        config=DetectorTrainConfig(model=cfg).to_dict(),
        preprocessing={"resize": "none", "mean": None, "std": None},
    )
    save_model(models_dir, "detector", contents, schema=SCHEMA)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models directory of three tiny models, their graphs exported."""
    models_dir = tmp_path_factory.mktemp("onnx_models")
    _save_appearance(models_dir, seed=0)
    _save_attributes(models_dir)
    _save_detector(models_dir)
    done = export_graphs(models_dir, schema=SCHEMA)
    assert all(d["exported"] for d in done.values())
    return models_dir


def test_appearance_codes_agree_between_the_runtimes(models):
    photos = _photos(12, seed=7)
    ours = AppearanceCoder.load(models, runtime="onnx")
    reference = AppearanceCoder.load(models)
    assert isinstance(ours.runner, OnnxModule) and ours.runner is not ours.net
    np.testing.assert_allclose(ours.features(photos), reference.features(photos), atol=FEATURE_ATOL)
    codes, expected = ours.encode(photos), reference.encode(photos)
    assert codes.shape == expected.shape == (12, ours.code_bytes)
    distances = np.unpackbits(codes ^ expected, axis=1).sum(1)
    assert distances.max() <= HAMMING_SHARE * ours.dims
    # one photo alone (batch 1) codes as it does in a batch: the batch axis is dynamic
    assert np.unpackbits(ours.encode(photos[:1]) ^ codes[:1]).sum() <= HAMMING_SHARE * ours.dims


def test_attribute_features_and_categories_agree_between_the_runtimes(models):
    photos = _photos(6, seed=8)
    ours = AttributePredictor.load(models, runtime="onnx")
    reference = AttributePredictor.load(models)
    assert isinstance(ours.model.encoder, OnnxModule)
    feats, expected = ours.features(photos), reference.features(photos)
    torch.testing.assert_close(feats, expected, atol=FEATURE_ATOL, rtol=1e-4)
    guides = [None, None, None, "pants", "dress", None]
    for a, b in zip(ours.predict(photos, guides), reference.predict(photos, guides)):
        assert a.category == b.category
        assert [c for c, _ in a.categories] == [c for c, _ in b.categories]
        assert {g: v for g, (v, _p) in a.attributes.items()} == {g: v for g, (v, _p) in b.attributes.items()}


def test_detector_backbone_agrees_between_the_runtimes_at_any_size(models):
    ours = GarmentDetector.load(models, runtime="onnx")
    reference = GarmentDetector.load(models)
    assert isinstance(ours.model.backbone, OnnxBackbone)
    for shape in [(1, 3, 64, 96), (2, 3, 96, 64), (1, 3, 128, 96)]:  # padded sizes the transform gives
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.inference_mode():
            got, want = ours.model.backbone(x), reference.model.backbone(x)
        assert list(got) == list(want)  # the FPN's levels, by the names the heads read
        for key in want:
            torch.testing.assert_close(got[key], want[key], atol=FEATURE_ATOL, rtol=1e-4)
    photo = _photos(1, seed=9)[0]
    (detection,) = ours.detect([photo], ["pants"])  # the heads run on the graph's levels
    assert detection.size == photo.size and len(detection.box) == 4


def test_the_detector_box_heads_int8_graph_gives_torchs_scores_within_its_rounding(models):
    ours = GarmentDetector.load(models, runtime="onnx")
    reference = GarmentDetector.load(models).model.roi_heads
    assert isinstance(ours.model.roi_heads.box_predictor, OnnxModule)
    assert ours.model.roi_heads.box_predictor.path.name.startswith("detector-boxes-int8-")
    rois = torch.randn(37, 256, 7, 7, generator=torch.Generator().manual_seed(3)).relu()  # pooled proposals
    with torch.inference_mode():
        logits, deltas = ours.model.roi_heads.box_predictor(rois)
        want_logits, want_deltas = reference.box_predictor(reference.box_head(rois))
    assert logits.shape == want_logits.shape and deltas.shape == want_deltas.shape
    # int8 rounds each weight and input to 1/255 of its range: the outputs move by a few percent of
    # theirs (measured ~2 % on the trained detector); the classes ranked first stay the same
    for got, want in ((logits, want_logits), (deltas, want_deltas)):
        assert (got - want).abs().max() <= 0.05 * want.abs().max()
    assert (logits.argmax(1) == want_logits.argmax(1)).float().mean() >= 0.9


def test_a_calibrated_int8_backbone_is_served_where_exported_and_copied_with_the_models(models, tmp_path):
    import shutil

    from detector.predict import BACKBONE_INT8_GRAPH

    other = tmp_path / "models"
    shutil.copytree(models, other)
    assert export_graphs(other, models=["detector"])["detector"]["exported"] is False
    assert not BACKBONE_INT8_GRAPH.path(other).exists()  # no calibration photos, no int8 graph
    (tmp_path / "bad.jpg").write_bytes(b"not a photo")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "image": "bad.jpg", "title": "pants"}\n')
    with pytest.raises(ValueError, match="no readable photo in"):
        calibration_photos(tmp_path / "bad.jsonl", 10)
    done = export_graphs(other, models=["detector"], calibration=_photos(8, seed=11))["detector"]
    int8 = BACKBONE_INT8_GRAPH.path(other)
    assert done["exported"] and str(int8) in done["graphs"] and int8.is_file()
    assert BACKBONE_GRAPH.path(other).is_file()  # the float graph's stale sweep leaves the int8 one
    ours, reference = GarmentDetector.load(other, runtime="onnx"), GarmentDetector.load(other)
    assert ours.model.backbone.graph.path == int8
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        got, want = ours.model.backbone(x), reference.model.backbone(x)
    assert list(got) == list(want)
    for key in want:  # int8 rounds each activation to 1/255 of its calibrated range: every level
        # keeps its direction (cosine 0.99 measured on this untrained net, whose levels are ~1e-6)
        assert torch.nn.functional.cosine_similarity(got[key].flatten(), want[key].flatten(), dim=0) >= 0.95
    (detection,) = ours.detect([_photos(1, seed=12)[0]], ["pants"])
    assert len(detection.box) == 4
    index_models = tmp_path / "index_models"
    index_models.mkdir()
    for name in ("appearance.pt", "attributes.pt", "detector.pt", "manifest.json"):
        shutil.copyfile(other / name, index_models / name)
    assert int8.name in {p.name for p in copy_graphs(other, index_models)}


def test_the_graph_cache_is_kept_for_the_same_model_file_and_rebuilt_for_a_new_one(models, tmp_path):
    import shutil

    path = ONNX_GRAPH.path(models)
    before = path.stat().st_mtime_ns
    again = export_graphs(models, models=["appearance"])
    assert again["appearance"] == {"graphs": [str(path)], "exported": False, "seconds": again["appearance"]["seconds"]}
    assert path.stat().st_mtime_ns == before
    # a retrained model (another file) has no graph until exported again; the stale one is said
    other = tmp_path / "models"
    shutil.copytree(models, other)
    _save_appearance(other, seed=3)
    assert ONNX_GRAPH.path(other) != ONNX_GRAPH.path(models)
    with pytest.raises(GraphMissing, match="older model file"):
        AppearanceCoder.load(other, runtime="onnx")
    new = export_graphs(other, models=["appearance"])["appearance"]
    assert new["exported"] and new["graphs"] == [str(ONNX_GRAPH.path(other))]
    assert ONNX_GRAPH.stale(other) == []  # the old graph went
    reference = AppearanceCoder.load(other)
    photos = _photos(4, seed=10)
    distances = np.unpackbits(AppearanceCoder.load(other, runtime="onnx").encode(photos) ^ reference.encode(photos))
    assert distances.sum() <= HAMMING_SHARE * reference.dims * len(photos)
    # an index copies the current graphs with its models, so it serves with the onnx runtime too
    index_models = tmp_path / "index_models"
    index_models.mkdir()
    for name in ("appearance.pt", "attributes.pt", "detector.pt", "manifest.json"):
        shutil.copyfile(other / name, index_models / name)
    copied = copy_graphs(other, index_models)
    assert sorted(p.name for p in copied) == sorted(p.name for p in current_graphs(other))
    assert Describer.load(index_models, runtime="onnx").runtime == "onnx"


def test_the_onnx_runtime_without_graphs_is_an_error_that_names_the_export_command(models, tmp_path, capsys):
    import shutil

    from cli.main import main

    bare = tmp_path / "bare"
    shutil.copytree(models, bare, ignore=shutil.ignore_patterns("onnx"))
    with pytest.raises(GraphMissing, match=f"fashion-search export onnx --models {bare}"):
        Describer.load(bare, runtime="onnx")
    with pytest.raises(GraphMissing, match="attributes model"):
        AttributePredictor.load(bare, runtime="onnx")
    with pytest.raises(GraphMissing, match="detector model"):
        GarmentDetector.load(bare, runtime="onnx")
    dump = tmp_path / "dump.jsonl"
    dump.write_text('{"id": "a", "image": "a.jpg", "title": "pants"}\n')
    rc = main(["index", str(dump), "--models", str(bare), "--out", str(tmp_path / "index"), "--runtime", "onnx"])
    assert rc == 2 and "fashion-search export onnx --models" in capsys.readouterr().err
    with pytest.raises(ValueError, match="on the CPU"):
        check_runtime("onnx", "cuda")
    with pytest.raises(ValueError, match="unknown runtime"):
        check_runtime("tensorrt")
    assert encoder_graph().name == "attributes" and BACKBONE_GRAPH.spatial


@pytest.mark.slow
def test_describe_workers_index_what_one_process_describing_batches_indexes(models, synth_dump, tmp_path):
    import json

    from indexer.bulk import BulkConfig, build_index
    from indexer.store import Store

    rows = [json.loads(line) for line in synth_dump.read_text().splitlines()[:10]]
    for r in rows:
        r["image"] = str(synth_dump.parent / r["image"])
    dump = tmp_path / "products.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    here = build_index(dump, models, tmp_path / "here", BulkConfig(workers=0, progress=False))
    there = build_index(dump, models, tmp_path / "there", BulkConfig(describe_workers=2, progress=False))
    assert here["indexed"] == there["indexed"] == 10 and there["skipped"] == 0
    assert all(there["stage_seconds"][s] > 0 for s in ("decode", "attributes", "detector", "appearance"))

    def categories(index):
        with Store(index) as store:
            return {r.id: [p.description.category for p in r.photos] for r in store.iter_records()}

    assert categories(tmp_path / "here") == categories(tmp_path / "there")
    with pytest.raises(ValueError, match="--describe-workers must be 0 or more, got -1"):
        BulkConfig(describe_workers=-1)


def test_a_describe_worker_without_its_models_fails_the_run_with_the_reason(tmp_path, monkeypatch):
    import indexer.parallel as parallel

    monkeypatch.setattr(parallel, "die_with_parent", lambda: None)  # this test runs it in-process
    monkeypatch.setattr(parallel, "_LOAD_ERROR", None)
    threads = torch.get_num_threads()
    try:
        parallel._load_models(str(tmp_path / "none"), "torch", "cpu")
    finally:
        torch.set_num_threads(threads)  # the worker's one thread, not this test process's
    with pytest.raises(RuntimeError, match="could not load the models: FileNotFoundError: no models directory"):
        parallel.decode_and_describe([])
