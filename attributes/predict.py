"""The attribute predictor the indexer and the query engine call: load once, predict in batches.

The image encoder may run on ONNX Runtime (``load(runtime="onnx")``, its graph exported by
``export_onnx``); the LSTM's decoding stays in torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from attributes.decode import Constraints, beam_decode, category_distribution, greedy_decode
from attributes.model import build_attribute_model, from_saved
from foundation.devices import parse_device
from foundation.modelfiles import Preprocess, load_model
from foundation.runtime import Graph, check_runtime, export_graph, open_graph
from foundation.schema import Schema, default_schema

logger = logging.getLogger(__name__)

MODEL_NAME = "attributes"
CATEGORY_THRESHOLD = 0.05  # auto mode lists categories at least this likely ...
MAX_CATEGORIES = 5  # ... and at most this many


@dataclass(frozen=True)
class AttributePrediction:
    category: str  # the guide, or the model's best category (auto)
    attributes: dict[
        str, tuple[str, float]
    ]  # group -> (value, probability), schema order, incl. great_category and category
    categories: list[tuple[str, float]]  # auto: most likely categories present, best first; guided: [(guide, 1.0)]


def encoder_graph(name: str = MODEL_NAME) -> Graph:
    """The ONNX graph of a saved attribute model's image encoder: images -> (N, feat_dim) features."""
    return Graph(name, "encoder", outputs=("features",))


def load(
    models_dir: str | Path,
    *,
    device: str = "cpu",
    schema: Schema | None = None,
    name: str = MODEL_NAME,
    runtime: str = "torch",
) -> tuple[nn.Module, Preprocess]:
    """(model in eval mode on ``device``, its preprocessing: PIL image -> (3, S, S) tensor), as saved.

    ``model.encode(torch.stack([preprocess(im) for im in images]))`` gives the image features; a
    model trained on another schema is refused. ``runtime="onnx"``: the encoder is the graph
    ``export_onnx`` cached (``foundation.runtime.GraphMissing`` when there is none); such a
    model infers only.
    """
    check_runtime(runtime, device)
    model, ck = load_sequence_model(models_dir, name, schema=schema)
    if runtime == "onnx":
        model.encoder = open_graph(encoder_graph(name), models_dir)
    return model.to(parse_device(device)), Preprocess.from_saved(ck["preprocessing"])


def export_onnx(models_dir: str | Path, *, schema: Schema | None = None, name: str = MODEL_NAME) -> Path:
    """Export the saved model's image encoder as its ONNX graph, cached in ``models_dir``."""
    model, ck = load_sequence_model(models_dir, name, schema=schema)
    size = Preprocess.from_saved(ck["preprocessing"]).image_size
    return export_graph(model.encoder, torch.zeros(2, 3, size, size), encoder_graph(name), models_dir)


def load_sequence_model(models_dir: str | Path, name: str = MODEL_NAME, *, schema: Schema | None = None):
    """(model in eval mode, checkpoint) of a saved attribute model."""
    schema = schema or default_schema()
    ck = load_model(models_dir, name, schema=schema)
    cfg, state = from_saved(ck["config"]["model"], ck["state_dicts"]["model"], what=f"{name} model in {models_dir}")
    # The weights come from the file: ImageNet's are not loaded (nor needed) at load time.
    model = build_attribute_model(cfg, schema=schema, load_pretrained=False)
    model.load_state_dict(state)
    return model.eval(), ck


class AttributePredictor:
    """Guided or auto attribute generation for batches of images."""

    def __init__(
        self, model, preprocess: Preprocess | dict, schema: Schema, *, device: str = "cpu", batch_size: int = 64
    ):
        self.device = parse_device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_saved(preprocess)
        self.schema = schema
        self.batch_size = batch_size
        self.constraints = Constraints(schema)
        self._great_of = [schema.great_category(c) for c in schema.category_names]

    @classmethod
    def load(
        cls, models_dir, *, device: str = "cpu", schema: Schema | None = None, runtime: str = "torch"
    ) -> AttributePredictor:
        """The predictor of ``models_dir/attributes.pt``; a clear error when missing or for another schema."""
        schema = schema or default_schema()
        model, preprocess = load(models_dir, device=device, schema=schema, runtime=runtime)
        return cls(model, preprocess, schema, device=device)

    @property
    def prep(self) -> dict:
        """The saved form of the preprocessing (image_size, mean, std)."""
        return self.preprocess.to_dict()

    @torch.inference_mode()
    def features(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, feat_dim) encoder features, computed in batches."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = self.preprocess.batch(images[i : i + self.batch_size]).to(self.device)
            out.append(self.model.encode(x))
        return torch.cat(out)

    @torch.inference_mode()
    def predict(
        self,
        images: list[Image.Image],
        guides: list[str | None] | None = None,
        *,
        beam: int = 1,
        features: torch.Tensor | None = None,
    ) -> list[AttributePrediction]:
        """Attributes per image: guided by ``guides[i]`` (a schema category) where given, else auto.

        Args:
            images: RGB PIL images (whole photos or regions).
            guides: one category or None per image; None for all auto.
            beam: 1 for greedy decoding, more for beam search of that width.
            features: the images' rows of ``features`` when the caller has them: a crop read under
                several categories is encoded once.
        """
        if guides is not None and len(guides) != len(images):
            raise ValueError(f"got {len(guides)} guides for {len(images)} images")
        if beam < 1:
            raise ValueError(f"beam width must be at least 1, got {beam}")
        if not images:
            return []
        guides = list(guides) if guides is not None else [None] * len(images)
        for g in guides:
            if g is not None:
                self.schema.check_category(g)
        if features is not None and len(features) != len(images):
            raise ValueError(f"got {len(features)} rows of features for {len(images)} images")
        feats = self.features(images) if features is None else features.to(self.device)
        names = self.schema.category_names
        # Auto mode takes the category with the highest marginal probability, then decodes guided by
        # it, so the category answered is always the first of those listed (a greedy walk through
        # great_category first can land elsewhere).
        auto = [i for i, g in enumerate(guides) if g is None]
        cat_p = category_distribution(self.model, feats[auto], self.constraints) if auto else None
        auto_row = {i: r for r, i in enumerate(auto)}
        steer = list(guides)
        for i in auto:
            steer[i] = names[int(torch.argmax(cat_p[auto_row[i]]))]
        if beam == 1:
            decoded = greedy_decode(self.model, feats, self.constraints, steer)
        else:
            decoded = beam_decode(self.model, feats, self.constraints, steer, beam=beam)
        out = []
        for i, d in enumerate(decoded):
            attrs = {}
            for tok, p in zip(d.tokens, d.probs):
                group, value = self.schema.parse_token(tok)
                attrs[group] = (value, p)
            category = steer[i]
            if guides[i] is not None:
                cats = [(guides[i], 1.0)]
            else:
                p = cat_p[auto_row[i]]
                c = names.index(category)
                great = self._great_of[c]
                attrs[self.schema.GREAT] = (
                    great,
                    float(sum(float(p[j]) for j, g in enumerate(self._great_of) if g == great)),
                )
                attrs[self.schema.CATEGORY] = (category, float(p[c]))
                top = torch.argsort(p, descending=True)[:MAX_CATEGORIES].tolist()
                cats = [(names[c], float(p[c])) for c in top if float(p[c]) >= CATEGORY_THRESHOLD]
                if not cats or cats[0][0] != category:
                    cats.insert(0, (category, float(p[c])))
            out.append(AttributePrediction(category, attrs, cats))
        return out
