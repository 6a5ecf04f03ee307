"""describe(): image (+ category guide, + rectangle) -> attributes, ROI, appearance code, colour.

``describe_items`` is the one entry point that bulk indexing, the API's product add and every
search call: it prepares each photo (``indexer.prepare``: hash, EXIF, shrink, blank check),
picks the guiding category by the one precedence, describes the batch at the working size and
maps the ROI back to the photo's own pixels. ``Describer.describe`` is the batched core:

1. category: the guide (the seller's text at indexing, the shopper's pick at query time), else
   (auto) the likeliest category once the detector has said which garments the photo holds and
   the attribute model what each is (``weigh_by_presence``);
2. attributes: guided decoding with that category; both read the rectangle's crop when one is
   drawn (it says which garment is meant), else the whole photo;
3. ROI: the rectangle given, else the guided detector's best box of that category, else the
   whole image (flagged ``fallback``);
4. the binarized GoogLeNet code and the HSV colour histogram of the ROI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from appearance.model import AppearanceCoder
from foundation import modelfiles
from foundation.boxes import Box, pixel_box
from foundation.runtime import check_runtime
from foundation.schema import Schema, default_schema
from indexer.colour import ColourConfig, colour_histogram
from indexer.description import Description
from indexer.hedge import hedge_categories
from indexer.prepare import ImageLimits, Prepared, content_hash, guide_category, prepare_image
from indexer.stem import SharedStem

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODEL_NAMES = ("attributes", "detector", "appearance")


def models_signature(models_dir: str | Path) -> str:
    """A short hash of the models' manifest entries: new models mean every product is re-described."""
    manifest = modelfiles.read_manifest(models_dir)
    entries = {k: manifest["models"][k] for k in sorted(manifest.get("models", {})) if k in MODEL_NAMES}
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(kw_only=True, eq=False)
class Describer:
    """The attribute predictor, the detector, the appearance coder and colour settings, built once.

    ``signature`` is the model files' (part of every content hash: new models re-describe every
    product); ``device`` and ``runtime`` are where and on what the models run, so models loaded
    anew run the same way.
    """

    predictor: object  # attributes.predict.AttributePredictor
    detector: object  # detector.predict.GarmentDetector
    coder: AppearanceCoder
    colour: ColourConfig = field(default_factory=ColourConfig)
    schema: Schema = field(default_factory=default_schema)
    signature: str = ""
    device: str = "cpu"
    runtime: str = "torch"
    # the trunk stages the attribute model and the appearance network share, when they do
    # (``indexer.stem``): a crop both read runs them once. Found on torch's models unless given.
    stem: SharedStem | None = None

    @classmethod
    def load(
        cls,
        models_dir: str | Path,
        *,
        device: str = "cpu",
        colour: ColourConfig | None = None,
        schema: Schema | None = None,
        runtime: str = "torch",
    ) -> Describer:
        """The three models of ``models_dir`` (attributes.pt, detector.pt, appearance.pt).

        ``runtime="onnx"`` runs their CNNs on ONNX Runtime, from the graphs ``fashion-search export
        onnx`` cached beside them (``foundation.runtime``; a clear error when one is missing).
        """
        models_dir = Path(models_dir)
        if not models_dir.is_dir():
            raise FileNotFoundError(f"no models directory at {models_dir}")
        check_runtime(runtime, device)
        schema = schema or default_schema()
        # the cheapest to check first
        coder = AppearanceCoder.load(models_dir, device=device, schema=schema, runtime=runtime)
        from attributes.predict import AttributePredictor

        predictor = AttributePredictor.load(models_dir, device=device, schema=schema, runtime=runtime)
        from detector.predict import GarmentDetector

        detector = GarmentDetector.load(models_dir, device=device, schema=schema, runtime=runtime)
        stem = SharedStem.open(models_dir, predictor, coder) if runtime == "onnx" else None
        return cls(
            predictor=predictor,
            detector=detector,
            coder=coder,
            colour=colour or ColourConfig(),
            schema=schema,
            signature=models_signature(models_dir),
            device=device,
            runtime=runtime,
            stem=stem,
        )

    def __post_init__(self) -> None:
        if self.stem is None and self.runtime == "torch":
            self.stem = SharedStem.of(self.predictor, self.coder)

    @property
    def code_bytes(self) -> int:
        return self.coder.code_bytes

    @property
    def ranking(self) -> dict | None:
        """The ranking weights chosen for this kind of appearance code, when its model file has them."""
        return self.coder.ranking

    def describe_hedged(
        self,
        image: Image.Image,
        guide: str | None = None,
        box: Box | None = None,
        raw=None,
        spent: dict[str, float] | None = None,
    ) -> tuple[list[Description], list[tuple[str, float]]]:
        """One photo's garment (guided, in a rectangle, or auto) and, where the model picked its
        category, the other likely categories (``indexer.hedge``), described in one call: the
        detector runs once (``raw``: its output, when the caller has it). Returns the descriptions
        (the garment's own first, then one per other category) and the categories searched with
        their probability. Each description's ``timings_ms`` is the whole photo's: every pass of
        this call, plus ``spent`` (seconds per stage the caller spent on it, e.g. its detector pass)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        clock = dict(spent or {})
        t0 = time.perf_counter()
        if raw is None and (box is None or guide is None):
            raw = self.detector.raw([image])[0]
        clock["detector"] = clock.get("detector", 0.0) + time.perf_counter() - t0
        (first,), feats = self._describe([image], [guide], [box], [raw], clock)
        if guide is None:
            hedge = hedge_categories(first.categories, self.schema.great_category)
        else:
            hedge = [(first.category, 1.0)]
        extra = [c for c, _p in hedge if c != first.category]
        more = []
        if extra and box is not None:  # the drawn rectangle is every category's ROI: its code and colour are first's
            t0 = time.perf_counter()
            crop = image.crop(pixel_box(box, image.size))  # read under the other categories: encoded once
            preds = self.predictor.predict([crop] * len(extra), extra, features=feats[[0] * len(extra)])
            more = [replace(first, category=c, attributes=attributes_of(p)) for c, p in zip(extra, preds)]
            clock["attributes"] += time.perf_counter() - t0
        elif extra:
            more, _ = self._describe([image] * len(extra), extra, [None] * len(extra), [raw] * len(extra), clock)
        for d in (first, *more):
            d.timings_ms = {k: round(v * 1e3, 3) for k, v in clock.items()}
        return [first, *more], hedge

    def describe(
        self,
        images: Sequence[Image.Image],
        guides: Sequence[str | None] | None = None,
        boxes: Sequence[Box | None] | None = None,
    ) -> list[Description]:
        """Describe a batch of RGB images.

        Args:
            images: PIL images (converted to RGB).
            guides: per image, a schema category or None (auto).
            boxes: per image, ``[x0, y0, x1, y1]`` in pixels of that image, or None (detector).
        """
        n = len(images)
        if n == 0:
            return []
        guides = list(guides) if guides is not None else [None] * n
        boxes = list(boxes) if boxes is not None else [None] * n
        if len(guides) != n or len(boxes) != n:
            raise ValueError(f"got {n} images but {len(guides)} guides and {len(boxes)} boxes")
        guides = [self.schema.check_category(g) if g else None for g in guides]
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return self._describe(images, guides, boxes, [None] * n)[0]

    def _describe(
        self, images: list, guides: list, boxes: list, raws: list, clock=None
    ) -> tuple[list[Description], torch.Tensor]:
        """``describe`` of checked arguments; ``raws``: the detector's output per image where known;
        ``clock``: seconds per stage, to which the whole batch's are added. Returns the
        descriptions and the attribute encoder's features of what it read (the crop or the photo)."""
        n = len(images)
        t: dict[str, float] = {}

        rois: list = [None] * n
        for i, b in enumerate(boxes):
            if b is not None:
                rois[i] = pixel_box(b, images[i].size)

        # 1-2. category and attributes (of the rectangle when one is drawn: it says which garment)
        t0 = time.perf_counter()
        seen = [images[i].crop(rois[i]) if rois[i] is not None else images[i] for i in range(n)]
        # drawn rectangles: the appearance code reads the crops the attribute model reads
        shared = self.stem.read(self.predictor, self.coder, seen) if self.stem and None not in rois else None
        # kept: a re-guided decode reads the same crops
        feats = shared[0] if shared else self.predictor.features(seen)
        preds = self.predictor.predict(seen, guides, features=feats)
        categories = [guides[i] or preds[i].category for i in range(n)]
        distributions = [[(str(c), float(p)) for c, p in pred.categories] for pred in preds]
        t["attributes"] = time.perf_counter() - t0 - (shared[2] if shared else 0.0)

        # 3. ROI: the rectangle, else the guided detector, else the whole image. Without a guide the
        # detector's evidence of the garments in the photo (in the rectangle, when one is drawn)
        # weighs the attribute model's guess.
        t0 = time.perf_counter()
        fallback = [False] * n
        need = [i for i in range(n) if boxes[i] is None or guides[i] is None]
        # the same photo twice in a batch is detected once
        todo = list({id(images[i]): images[i] for i in need if raws[i] is None}.values())
        found = dict(zip((id(im) for im in todo), self.detector.raw(todo))) if todo else {}
        for i in need:
            raws[i] = found.get(id(images[i]), raws[i])
        reguide = []
        for i in need:
            raw = raws[i]
            if guides[i] is None:
                presence = self.detector.presence(raw, within=rois[i])
                distributions[i] = weigh_by_presence(distributions[i], presence, self.schema.great_category)
                if distributions[i][0][0] != categories[i]:
                    categories[i] = distributions[i][0][0]
                    reguide.append(i)
            if boxes[i] is None:
                det = self.detector.choose(raw, categories[i], images[i].size)
                fallback[i] = bool(det.fallback)
                rois[i] = pixel_box(det.box, images[i].size) if not det.fallback else (0, 0, *images[i].size)
        crops = [seen[i] if boxes[i] is not None else images[i].crop(rois[i]) for i in range(n)]
        t["detector"] = time.perf_counter() - t0
        if reguide:  # the attributes of the category the evidence chose, decoded guided by it
            t0 = time.perf_counter()
            for i, pred in zip(
                reguide,
                self.predictor.predict(
                    [seen[i] for i in reguide], [categories[i] for i in reguide], features=feats[reguide]
                ),
            ):
                preds[i] = pred
            t["attributes"] += time.perf_counter() - t0

        # 4. appearance code and colour of the ROI, once per distinct crop (the categories a drawn
        # rectangle hedges over share its crop)
        t0 = time.perf_counter()
        first = {}
        for i in range(n):
            first.setdefault((id(images[i]), tuple(rois[i])), i)
        unique = sorted(set(first.values()))
        if shared:  # every crop is its rectangle's, coded with the attributes' pass
            codes_of = {j: shared[1][j] for j in unique}
        else:
            codes_of = dict(zip(unique, self.coder.encode([crops[i] for i in unique])))
        slot = [first[(id(images[i]), tuple(rois[i]))] for i in range(n)]
        codes = [codes_of[j] for j in slot]
        t["appearance"] = time.perf_counter() - t0 + (shared[2] if shared else 0.0)
        t0 = time.perf_counter()
        colours_of = {j: colour_histogram(crops[j], self.colour) for j in unique}
        colours = [colours_of[j] for j in slot]
        t["colour"] = time.perf_counter() - t0

        if clock is not None:
            for k, v in t.items():
                clock[k] = clock.get(k, 0.0) + v
        per_image = {k: round(v * 1e3 / n, 3) for k, v in t.items()}
        out = []
        for i in range(n):
            p = preds[i]
            out.append(
                Description(
                    category=categories[i],
                    attributes=attributes_of(p),
                    categories=distributions[i],
                    roi=tuple(int(v) for v in rois[i]),
                    fallback=fallback[i],
                    code=codes[i],
                    colour=colours[i],
                    timings_ms=dict(per_image),
                )
            )
        return out, feats


def attributes_of(prediction) -> dict[str, tuple[str, float]]:
    """A prediction's attributes as a description holds them: group -> (value, probability)."""
    return {g: (str(v), float(p)) for g, (v, p) in prediction.attributes.items()}


# A garment the detector finds no box of keeps this share of the attribute model's weight: the
# detector misses garments (small, occluded), and a photo of one garment on a plain background needs none.
PRESENCE_FLOOR = 0.05


def weigh_by_presence(
    categories: Sequence[tuple[str, float]],
    presence: dict[str, float],
    great_of: Callable[[str], str],
    floor: float = PRESENCE_FLOOR,
) -> list[tuple[str, float]]:
    """Auto's category distribution: the detector says which garments the photo holds, the attribute
    model what each of them is; renormalised, likeliest first.

    ``categories`` is the attribute model's distribution over the whole photo, ``presence`` the
    detector's best guided score per category. A great-category ``g`` (a garment: tops, bottoms,
    shoes ...) weighs ``floor * P(g) + presence(g)``, ``presence(g)`` its categories' best score;
    within it each category keeps the model's share ``P(c | g)``. A photo with a top and trousers
    thus puts most of its weight on those two garments, whichever the model found likelier over
    the whole photo; a photo where the detector finds nothing keeps the model's own distribution.
    """
    great = {}
    for c, p in categories:
        g = great_of(c)
        mass, seen = great.get(g, (0.0, 0.0))
        great[g] = (mass + p, max(seen, presence.get(c, 0.0)))
    weighted = {}
    for c, p in categories:
        mass, seen = great[great_of(c)]
        if mass > 0:
            weighted[c] = (p / mass) * (floor * mass + seen)
    total = sum(weighted.values())
    if total <= 0:
        return sorted(((str(c), float(p)) for c, p in categories), key=lambda cp: -cp[1])
    return sorted(((c, w / total) for c, w in weighted.items()), key=lambda cp: -cp[1])


@dataclass
class Item:
    """One photo to describe, with what is known of it.

    Args:
        source: the photo's bytes (or path), or an already prepared photo (bulk decode workers).
        category: the shopper's or seller's explicit category.
        texts: the seller's text, general first (category path, then title).
        label: a labelled category (training dumps).
        box: the drawn rectangle ``[x0, y0, x1, y1]`` in the photo's own pixels.
        fields: the product's own fields, hashed into the content hash.
    """

    source: bytes | str | Path | Image.Image | Prepared
    category: str | None = None
    texts: tuple[str, ...] = ()
    label: str | None = None
    box: Box | None = None
    fields: tuple = field(default_factory=tuple)


@dataclass
class DescribedPhoto:
    """What ``describe_items`` says of one photo."""

    description: Description  # ROI in the photo's own pixels
    prepared: Prepared
    content_hash: str  # of this photo alone and the item's fields (``indexer.prepare.content_hash``)


def describe_items(
    describer: Describer, items: Sequence[Item], *, limits: ImageLimits | None = None
) -> list[DescribedPhoto]:
    """Prepare, guide and describe a batch of photos: the same path offline and online.

    Raises:
        foundation.images.ImageError: a photo that cannot be used (the whole call fails; bulk
            prepares in its workers first, so one bad photo never reaches a batch).
        ValueError: an unknown category or a box outside the photo.
    """
    limits = limits or ImageLimits()
    prepared = [
        it.source if isinstance(it.source, Prepared) else prepare_image(it.source, limits=limits) for it in items
    ]
    guides = [guide_category(describer.schema, explicit=it.category, texts=it.texts, label=it.label) for it in items]
    boxes = [p.to_working(it.box) if it.box is not None else None for it, p in zip(items, prepared)]
    descs = describer.describe([p.image for p in prepared], guides=guides, boxes=boxes)
    out = []
    for it, p, d in zip(items, prepared, descs):
        d.roi = p.to_original(d.roi)
        out.append(DescribedPhoto(d, p, content_hash([p.image_hash], it.fields, describer.signature)))
    return out


def describe_query(
    describer: Describer, prepared: Prepared, *, guide: str | None = None, box: Box | None = None
) -> list[tuple[list[Description], list[tuple[str, float]]]]:
    """A shopper's photo, prepared once, described: with a guide or a drawn box, the one garment
    meant (``Describer.describe_hedged``); else every garment found (``indexer.garments``), the
    likeliest meant first. Each garment comes as its descriptions and the categories searched;
    ``box`` and the ROIs answered are in the photo's own pixels."""
    from indexer.garments import describe_garments

    if guide is not None:
        describer.schema.check_category(guide)
    if guide is None and box is None:
        garments = describe_garments(describer, prepared.image)
    else:
        working = prepared.to_working(box) if box is not None else None
        garments = [describer.describe_hedged(prepared.image, guide, working)]
    for descs, _hedge in garments:
        for d in descs:
            d.roi = prepared.to_original(d.roi)
    return garments
