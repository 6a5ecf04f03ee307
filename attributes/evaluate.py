"""Measuring the attribute model against a dump with known attributes, beside the baseline.

Figures (the paper's Table 2 and more):

- micro precision / recall / F1 over attribute tokens (``group=value``), auto decoding;
- NLL: the teacher-forced negative log-likelihood per target token (EOS included);
- per-group accuracy, over the products whose truth has the group;
- the category confusion matrix (rows: truth, columns: auto prediction) and category accuracy;
- guided vs auto accuracy of the groups that depend on the category (all but great-category
  and category): guided decoding is given the true category;
- the binary-relevance baseline (``attributes-baseline``, when the model directory holds one):
  the same encoder with one softmax per group, so the LSTM's worth is measured.

Images go through the evaluation transform of training (the cached image resized to the
model's input), so figures do not depend on augmentation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
)
from tqdm import tqdm

from attributes.data import SequenceDataset, collate, group_targets, load_examples
from attributes.decode import Constraints, beam_decode, greedy_decode
from attributes.predict import load_sequence_model
from attributes.train import MODEL_NAMES
from foundation.modelfiles import ModelError
from foundation.schema import BOS, EOS, PAD, Schema, default_schema

logger = logging.getLogger(__name__)


def _multi_hot(token_sets: list[set[int]], V: int) -> torch.Tensor:
    out = torch.zeros((len(token_sets), V), dtype=torch.long)
    for i, s in enumerate(token_sets):
        if s:
            out[i, list(s)] = 1
    return out


def token_metrics(pred: list[set[int]], truth: list[set[int]], schema: Schema) -> dict:
    """Micro precision, recall and F1 over attribute tokens (torchmetrics)."""
    first = len((PAD, BOS, EOS))
    V = len(schema.tokens)
    p, t = _multi_hot(pred, V)[:, first:], _multi_hot(truth, V)[:, first:]
    n = V - first
    return {
        "precision": float(MultilabelPrecision(num_labels=n, average="micro")(p, t)),
        "recall": float(MultilabelRecall(num_labels=n, average="micro")(p, t)),
        "f1": float(MultilabelF1Score(num_labels=n, average="micro")(p, t)),
    }


def group_accuracy(pred: list[dict[str, str]], truth: list[dict[str, str]], groups) -> dict[str, dict]:
    """Per group: accuracy over the products whose truth has the group, and how many those are."""
    out = {}
    for g in groups:
        pairs = [(p.get(g), t[g]) for p, t in zip(pred, truth) if g in t]
        if pairs:
            out[g] = {"accuracy": sum(a == b for a, b in pairs) / len(pairs), "n": len(pairs)}
    return out


def confusion(pred_cats: list[str | None], true_cats: list[str], schema: Schema) -> dict:
    """Category accuracy and confusion matrix (rows truth, columns prediction) over present categories."""
    names = list(schema.category_names)
    idx = {c: i for i, c in enumerate(names)}
    p = torch.tensor([idx.get(c, -1) if c else -1 for c in pred_cats])
    t = torch.tensor([idx[c] for c in true_cats])
    p = torch.where(p < 0, torch.full_like(p, len(names)), p)  # "none" column for missing predictions
    cm = MulticlassConfusionMatrix(num_classes=len(names) + 1)(p, t)
    present = sorted({int(i) for i in t} | {int(i) for i in p if int(i) < len(names)})
    return {
        "accuracy": float((p == t).float().mean()),
        "labels": [names[i] for i in present],
        "matrix": cm[present][:, present].tolist(),
    }


@torch.inference_mode()
def _lstm_pass(model, loader, constraints: Constraints, beam: int, progress: bool):
    schema = constraints.schema
    nll_sum, n_tok = 0.0, 0
    auto, guided, truths = [], [], []
    for images, tokens in tqdm(loader, desc="lstm", unit="batch", disable=not progress):
        logits = model(images, tokens[:, :-1])
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=0, reduction="sum"
        )
        nll_sum += float(nll)
        n_tok += int((tokens[:, 1:] != 0).sum())
        truth = [schema.decode(t) for t in tokens.tolist()]
        feats = model.encode(images)
        dec = greedy_decode if beam == 1 else (lambda *a: beam_decode(*a, beam=beam))
        auto += [d.tokens for d in dec(model, feats, constraints, None)]
        guided += [d.tokens for d in dec(model, feats, constraints, [t[schema.CATEGORY] for t in truth])]
        truths += truth
    return nll_sum / max(n_tok, 1), auto, guided, truths


@torch.inference_mode()
def _baseline_pass(model, loader, schema: Schema, progress: bool):
    preds, truths, nll_sum, n = [], [], 0.0, 0
    for images, tokens in tqdm(loader, desc="baseline", unit="batch", disable=not progress):
        logits = model(images)
        target = group_targets(tokens, schema)
        nll_sum += sum(float(F.cross_entropy(lg, target[:, i], reduction="sum")) for i, lg in enumerate(logits))
        n += tokens.shape[0] * len(logits)
        choice = torch.stack([lg.argmax(dim=1) for lg in logits], dim=1)
        for row in choice.tolist():
            preds.append({g.name: g.values[v] for g, v in zip(schema.groups, row) if v < len(g.values)})
        truths += [schema.decode(t) for t in tokens.tolist()]
    return nll_sum / max(n, 1), preds, truths


def _token_sets(attrs: list[dict[str, str]], schema: Schema) -> list[set[int]]:
    return [{schema.token_id(schema.token(g, v)) for g, v in a.items()} for a in attrs]


@dataclass(frozen=True)
class AttributeEvalConfig:
    """How the attribute model is measured."""

    beam: int = 1  # beam width (1: greedy)
    baseline: bool = True  # beside the binary-relevance baseline, when the model directory holds one
    limit: int | None = None  # the dump's first N products only
    batch_size: int = 64


def evaluate_split(
    dump: str | Path,
    models_dir: str | Path,
    config: AttributeEvalConfig = AttributeEvalConfig(),
    *,
    schema: Schema | None = None,
    progress: bool = True,
) -> dict:
    """All figures for one dump: the LSTM's, and the baseline's when there is one."""
    schema = schema or default_schema()
    model, ck = load_sequence_model(models_dir, schema=schema)
    size = ck["preprocessing"]["image_size"]
    ex = load_examples(dump, size, schema=schema, progress=progress, limit=config.limit)
    loader = DataLoader(SequenceDataset(ex, size, train=False), batch_size=config.batch_size, collate_fn=collate)
    constraints = Constraints(schema)
    dependent = [g.name for g in schema.groups[2:]]
    t0 = time.perf_counter()
    nll, auto, guided, truths = _lstm_pass(model, loader, constraints, config.beam, progress)
    auto_attrs = [schema.decode(t) for t in auto]
    guided_attrs = [schema.decode(t) for t in guided]
    lstm = {
        "nll_per_token": nll,
        **token_metrics(_token_sets(auto_attrs, schema), _token_sets(truths, schema), schema),
        "groups": group_accuracy(auto_attrs, truths, [g.name for g in schema.groups]),
        "category": confusion(
            [a.get(schema.CATEGORY) for a in auto_attrs], [t[schema.CATEGORY] for t in truths], schema
        ),
        "dependent_groups": {
            "auto": group_accuracy(auto_attrs, truths, dependent),
            "guided": group_accuracy(guided_attrs, truths, dependent),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    result = {"dump": str(dump), "products": len(ex), "skipped": ex.skipped, "beam": config.beam, "lstm": lstm}
    if config.baseline:
        try:
            bmodel, _ = load_sequence_model(models_dir, MODEL_NAMES["binary"], schema=schema)
        except ModelError as exc:
            logger.warning("no baseline to compare with: %s", exc)
        else:
            bnll, bpred, btruth = _baseline_pass(bmodel, loader, schema, progress)
            result["baseline"] = {
                "nll_per_group": bnll,
                **token_metrics(_token_sets(bpred, schema), _token_sets(btruth, schema), schema),
                "groups": group_accuracy(bpred, btruth, [g.name for g in schema.groups]),
                "category": confusion(
                    [a.get(schema.CATEGORY) for a in bpred], [t[schema.CATEGORY] for t in btruth], schema
                ),
            }
    return result


def evaluate_attributes(
    dump: str | Path,
    models_dir: str | Path,
    config: AttributeEvalConfig = AttributeEvalConfig(),
    *,
    train_dump: str | Path | None = None,
    train_limit: int | None = 1000,
    street_dump: str | Path | None = None,
    **kwargs,
) -> dict:
    """Figures on ``dump`` (and on up to ``train_limit`` products of ``train_dump``, for Table 2's
    train row; on ``street_dump``, garment crops of street photos, beside them).

    ``kwargs`` (``schema``, ``progress``) go to ``evaluate_split``."""
    out = {"models": str(models_dir), "val": evaluate_split(dump, models_dir, config, **kwargs)}
    if train_dump:
        out["train"] = evaluate_split(train_dump, models_dir, replace(config, limit=train_limit), **kwargs)
    if street_dump:
        out["street"] = evaluate_split(street_dump, models_dir, config, **kwargs)
    return out


def format_report(result: dict) -> str:
    """A readable table of the figures."""
    lines = []
    splits = (("train", result.get("train")), ("val", result["val"]), ("street", result.get("street")))
    rows = [(name, split) for name, split in splits if split]
    lines.append(f"{'split':6} {'model':9} {'precision':>9} {'recall':>7} {'F1':>6} {'cat.acc':>7} {'NLL':>7}")
    for name, split in rows:
        for kind in ("lstm", "baseline"):
            m = split.get(kind)
            if not m:
                continue
            nll = m.get("nll_per_token", m.get("nll_per_group"))
            lines.append(
                f"{name:6} {kind:9} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} "
                f"{m['category']['accuracy']:7.3f} {nll:7.3f}"
            )
    lines.append("(NLL: LSTM per token; baseline per group, so not comparable)")
    val = result["val"]
    lines.append("")
    lines.append(f"per-group accuracy on {val['products']} products ({val['dump']}):")
    lines.append(f"{'group':16} {'n':>5} {'lstm auto':>9} {'lstm guided':>11} {'baseline':>8}")
    dep = val["lstm"]["dependent_groups"]
    for g, m in val["lstm"]["groups"].items():
        guided = dep["guided"].get(g, {}).get("accuracy")
        base = val.get("baseline", {}).get("groups", {}).get(g, {}).get("accuracy")
        fmt = lambda v, w: f"{v:{w}.3f}" if v is not None else f"{'-':>{w}}"  # noqa: E731
        lines.append(f"{g:16} {m['n']:5d} {m['accuracy']:9.3f} {fmt(guided, 11)} {fmt(base, 8)}")
    cat = val["lstm"]["category"]
    lines.append("")
    lines.append("category confusion (rows truth, columns auto prediction):")
    width = max(len(c) for c in cat["labels"])
    lines.append(" " * (width + 1) + " ".join(f"{c[:5]:>5}" for c in cat["labels"]))
    for c, row in zip(cat["labels"], cat["matrix"]):
        lines.append(f"{c:>{width}} " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)
