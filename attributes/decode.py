"""Decoding attribute sequences under the schema's constraints: greedy, beam, guided.

At each step only tokens that can follow the prefix are allowed: the great-category first, then
a category of that great-category, then groups in schema order (each at most once, a later group
only after an earlier one), only groups that apply to the category; EOS is allowed from the
category on. Groups strictly advance, so every sequence ends within ``len(groups) + 1`` steps.

*Guided* decoding feeds the given category (and its great-category) instead of choosing them,
and generation continues from there: the forced tokens get probability 1.

Probabilities reported per token are those of the model's softmax renormalised over the allowed
tokens.

Auto mode's ``categories`` are marginalised over great-categories:
``p(category) = p(great) * p(category | great)``, each from the decoder's first two steps, so a
photo holding a blouse and a skirt lists both even though the search commits to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foundation.schema import BOS, EOS, PAD, Schema

NEG = -1e9


class Constraints:
    """Lookup tables of the tokens allowed after each prefix state, as a (R, V) bool tensor."""

    def __init__(self, schema: Schema):
        self.schema = schema
        V = len(schema.tokens)
        G = len(schema.groups)
        self.pad, self.bos, self.eos = (schema.token_id(t) for t in (PAD, BOS, EOS))
        self.n_groups = G
        group_of = torch.full((V,), -1, dtype=torch.long)
        for i in range(len(schema.tokens)):
            if schema.tokens[i] not in (PAD, BOS, EOS):
                group_of[i] = [g.name for g in schema.groups].index(schema.parse_token(i)[0])
        self.group_of = group_of
        greats = schema.great_categories
        cats = schema.category_names
        self.great_ids = torch.tensor([schema.token_id(schema.token(schema.GREAT, g)) for g in greats])
        self.cat_ids = torch.tensor([schema.token_id(schema.token(schema.CATEGORY, c)) for c in cats])
        # Index of a token within its great/category list (-1 elsewhere).
        self.great_index = torch.full((V,), -1, dtype=torch.long)
        self.great_index[self.great_ids] = torch.arange(len(greats))
        self.cat_index = torch.full((V,), -1, dtype=torch.long)
        self.cat_index[self.cat_ids] = torch.arange(len(cats))
        self.cat_great = torch.tensor([greats.index(schema.great_category(c)) for c in cats])
        # Rows: 0 start; 1 + g after great g; 1 + nG + c * G + k after group k with category c; last: finished.
        nG, nC = len(greats), len(cats)
        rows = torch.zeros((1 + nG + nC * G + 1, V), dtype=torch.bool)
        rows[0, self.great_ids] = True
        for gi in range(nG):
            rows[1 + gi, self.cat_ids[self.cat_great == gi]] = True
        for ci, cat in enumerate(cats):
            for k in range(1, G):
                row = rows[1 + nG + ci * G + k]
                row[self.eos] = True
                for later in range(k + 1, G):
                    g = schema.groups[later]
                    if schema.applies(g, cat):
                        row[(group_of == later).nonzero().flatten()] = True
        rows[-1, self.pad] = True
        self.table = rows
        self.n_great, self.n_cat = nG, nC
        self.finished_row = rows.shape[0] - 1

    def rows(
        self, last_group: torch.Tensor, great: torch.Tensor, cat: torch.Tensor, done: torch.Tensor
    ) -> torch.Tensor:
        """Row index into ``table`` for each sequence's state (all (N,) long/bool tensors)."""
        G = self.n_groups
        r = torch.where(
            last_group < 0,
            torch.zeros_like(last_group),
            torch.where(last_group == 0, 1 + great.clamp(min=0), 1 + self.n_great + cat.clamp(min=0) * G + last_group),
        )
        return torch.where(done, torch.full_like(r, self.finished_row), r)

    def allowed(self, last_group, great, cat, done) -> torch.Tensor:
        """(N, V) bool: the tokens allowed next."""
        return self.table[self.rows(last_group, great, cat, done)]

    def advance(self, token: torch.Tensor, last_group, great, cat, done):
        """The state after emitting ``token`` (N,)."""
        g = self.group_of[token]
        new_last = torch.where(g >= 0, g, last_group)
        great = torch.where(self.great_index[token] >= 0, self.great_index[token], great)
        cat = torch.where(self.cat_index[token] >= 0, self.cat_index[token], cat)
        return new_last, great, cat, done | (token == self.eos) | (token == self.pad)

    def is_valid(self, tokens: list[int]) -> bool:
        """Whether a decoded sequence (without BOS) is one the constraints allow."""
        state = (torch.tensor([-1]), torch.tensor([-1]), torch.tensor([-1]), torch.tensor([False]))
        for t in tokens:
            if not bool(self.allowed(*state)[0, t]):
                return False
            state = self.advance(torch.tensor([t]), *state)
        return True


@dataclass(frozen=True)
class Decoded:
    """One decoded sequence: token ids (without BOS/EOS) and each token's probability."""

    tokens: list[int]
    probs: list[float]


def forced_tokens(constraints: Constraints, guides: list[str | None]) -> torch.Tensor:
    """(N, 2) forced token ids (great, category) per sequence; -1 where not guided."""
    s = constraints.schema
    out = torch.full((len(guides), 2), -1, dtype=torch.long)
    for i, g in enumerate(guides):
        if g is not None:
            s.check_category(g)
            out[i, 0] = s.token_id(s.token(s.GREAT, s.great_category(g)))
            out[i, 1] = s.token_id(s.token(s.CATEGORY, g))
    return out


def _masked_logp(logits: torch.Tensor, allowed: torch.Tensor, forced: torch.Tensor) -> torch.Tensor:
    """Log-probabilities renormalised over the allowed tokens; a forced token gets log p = 0."""
    logp = torch.log_softmax(logits.float().masked_fill(~allowed, NEG), dim=-1)
    is_forced = forced >= 0
    if is_forced.any():
        f = torch.full_like(logp, NEG)
        f.scatter_(1, forced.clamp(min=0).unsqueeze(1), 0.0)
        logp = torch.where(is_forced.unsqueeze(1), f, logp)
    return logp


def _init(model, feats: torch.Tensor, bos: int):
    proj, state = model.init_state(feats)
    tokens = torch.full((feats.shape[0], 1), bos, dtype=torch.long, device=feats.device)
    return proj, state, tokens


@torch.inference_mode()
def greedy_decode(
    model, feats: torch.Tensor, constraints: Constraints, guides: list[str | None] | None = None
) -> list[Decoded]:
    """The most likely token at each step, under the constraints.

    Args:
        feats: (N, feat_dim) image features from ``model.encode``.
        guides: a category per image to force, or None for auto.
    """
    N = feats.shape[0]
    guides = guides or [None] * N
    forced = forced_tokens(constraints, guides)
    proj, state, tok = _init(model, feats, constraints.bos)
    last = torch.full((N,), -1, dtype=torch.long)
    great, cat = last.clone(), last.clone()
    done = torch.zeros(N, dtype=torch.bool)
    seqs = [[] for _ in range(N)]
    probs = [[] for _ in range(N)]
    for t in range(constraints.n_groups + 1):
        logits, state = model.step(proj, tok, state)
        f = forced[:, t] if t < 2 else torch.full((N,), -1, dtype=torch.long)
        logp = _masked_logp(logits[:, -1].cpu(), constraints.allowed(last, great, cat, done), f)
        best_lp, best = logp.max(dim=-1)
        for i in range(N):
            if not done[i] and best[i] != constraints.eos:
                seqs[i].append(int(best[i]))
                probs[i].append(float(best_lp[i].exp()))
        last, great, cat, done = constraints.advance(best, last, great, cat, done)
        if done.all():
            break
        tok = best.unsqueeze(1).to(feats.device)
    return [Decoded(s, p) for s, p in zip(seqs, probs)]


@torch.inference_mode()
def beam_decode(
    model, feats: torch.Tensor, constraints: Constraints, guides: list[str | None] | None = None, *, beam: int = 3
) -> list[Decoded]:
    """Beam search of width ``beam`` under the constraints; the best complete sequence per image.

    Sequences are ranked by their summed log-probability (no length normalisation: the schema,
    not the model, decides how many groups a category has).
    """
    if beam < 1:
        raise ValueError(f"beam width must be at least 1, got {beam}")
    N, K, V = feats.shape[0], beam, len(constraints.schema.tokens)
    guides = guides or [None] * N
    forced = forced_tokens(constraints, guides).repeat_interleave(K, dim=0)
    proj, state, _ = _init(model, feats, constraints.bos)
    proj = proj.repeat_interleave(K, dim=0)
    state = tuple(s.repeat_interleave(K, dim=1) for s in state)
    tok = torch.full((N * K, 1), constraints.bos, dtype=torch.long, device=feats.device)
    scores = torch.full((N, K), NEG)
    scores[:, 0] = 0.0  # only one live beam at the start
    last = torch.full((N * K,), -1, dtype=torch.long)
    great, cat = last.clone(), last.clone()
    done = torch.zeros(N * K, dtype=torch.bool)
    steps = constraints.n_groups + 1
    hist = torch.full((N * K, 0), constraints.pad, dtype=torch.long)
    hist_lp = torch.zeros((N * K, 0))
    for t in range(steps):
        logits, state = model.step(proj, tok, state)
        f = forced[:, t] if t < 2 else torch.full((N * K,), -1, dtype=torch.long)
        logp = _masked_logp(logits[:, -1].cpu(), constraints.allowed(last, great, cat, done), f)
        # A finished beam carries its score unchanged through PAD.
        logp = torch.where(
            done.unsqueeze(1), torch.full_like(logp, NEG).index_fill_(1, torch.tensor([constraints.pad]), 0.0), logp
        )
        cand = (scores.view(N * K, 1) + logp).view(N, K * V)
        top, idx = cand.topk(K, dim=1)
        src = (idx // V) + torch.arange(N).unsqueeze(1) * K  # flat index of the parent beam
        token = idx % V
        src, token = src.flatten(), token.flatten()
        hist = torch.cat([hist[src], token.unsqueeze(1)], dim=1)
        hist_lp = torch.cat([hist_lp[src], logp[src, token].unsqueeze(1)], dim=1)
        last, great, cat, done = constraints.advance(token, last[src], great[src], cat[src], done[src])
        scores = top
        state = tuple(s[:, src.to(s.device)] for s in state)
        tok = token.unsqueeze(1).to(feats.device)
        if done.all():
            break
    best = scores.argmax(dim=1) + torch.arange(N) * K
    out = []
    for b in best.tolist():
        toks, probs = [], []
        for tk, lp in zip(hist[b].tolist(), hist_lp[b].tolist()):
            if tk in (constraints.eos, constraints.pad):
                break
            toks.append(tk)
            probs.append(float(torch.tensor(lp).exp()))
        out.append(Decoded(toks, probs))
    return out


@torch.inference_mode()
def category_distribution(model, feats: torch.Tensor, constraints: Constraints) -> torch.Tensor:
    """(N, n_categories) p(category) = p(great) * p(category | great) from the first two steps."""
    N = feats.shape[0]
    nG = constraints.n_great
    proj, state, tok = _init(model, feats, constraints.bos)
    logits, state = model.step(proj, tok, state)
    start = constraints.table[0].expand(N, -1)
    p_great = torch.softmax(logits[:, -1].float().cpu().masked_fill(~start, NEG), dim=-1)[:, constraints.great_ids]
    proj = proj.repeat_interleave(nG, dim=0)
    state = tuple(s.repeat_interleave(nG, dim=1) for s in state)
    tok = constraints.great_ids.repeat(N).unsqueeze(1).to(feats.device)
    logits, _ = model.step(proj, tok, state)
    allowed = constraints.table[1 + torch.arange(nG).repeat(N)]
    p_cat = torch.softmax(logits[:, -1].float().cpu().masked_fill(~allowed, NEG), dim=-1)[:, constraints.cat_ids]
    p_cat = p_cat.view(N, nG, -1) * p_great.unsqueeze(2)  # zero outside each category's own great
    return p_cat.sum(dim=1)
