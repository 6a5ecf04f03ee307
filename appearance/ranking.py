"""The ranking weights (``search.ranking.RankingConfig``'s) each kind of appearance code is saved with.

Both were chosen by ``benchmarks/ranking_weights.py`` on half of the clothing val scenes: a code
trained to find products carries the ranking (held-out R@10 guided 0.787, rectangle 0.720);
ImageNet features as they are, or a code trained on categories, find categories more than
products and leave much to colour (those weights gave the demo's guided search 0.59 same-colour
P@10, the instance ones 0.26). The instance weights are also the search's defaults for a model
that carries none.
"""

INSTANCE_RANKING = {"w_appearance": 2.0, "w_colour": 0.25, "w_shared": 0.0}
CATEGORY_RANKING = {"w_appearance": 0.25, "w_colour": 2.0, "w_shared": 0.25}
