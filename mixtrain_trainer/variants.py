"""Variant name -> what it mixes, how, which selection rule decides (``rules.RULES``), and which epoch
strategy trains it (``strategy.STRATEGIES``: ``mixing`` unless the variant is a rival) (METHOD.md)."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    rule: str = "none"  # selection rule (rules.RULES)
    operator: Literal["cutmix", "mixup"] | None = None
    split: bool = False  # CutMix: split propagation
    adaptive: bool = False  # MixUp: adaptive ratio
    rival: str | None = None  # the rival's epoch strategy (strategy.STRATEGIES); None: mixing
    final_nomix_fraction: float | None = None  # None: the run's policy.final_nomix_fraction
    description: str = ""

    @property
    def mixes(self) -> bool:
        return self.operator is not None

    @property
    def strategy(self) -> str:
        """The epoch strategy that trains this variant."""
        return self.rival or "mixing"


VARIANTS: dict[str, Variant] = {}


def register_variant(*variants: Variant) -> None:
    """Add variants by name; a second variant of the same name is refused."""
    for v in variants:
        if v.name in VARIANTS:
            raise ValueError(f"variant {v.name!r} is already registered")
        VARIANTS[v.name] = v


register_variant(
    Variant("baseline", description="plain SGD, no mixing"),
    Variant("naive-cutmix", "naive", "cutmix", description="all samples paired every epoch, CutMix r=0.5"),
    Variant("naive-mixup", "naive", "mixup", description="all samples paired every epoch, MixUp r=0.5"),
    Variant("naive-cutmix-split", "naive", "cutmix", split=True, description="naive pairing + split propagation"),
    Variant("naive-mixup-adaptive", "naive", "mixup", adaptive=True, description="naive pairing + adaptive ratio"),
    Variant("mixtrain-cutmix", "mixtrain", "cutmix", split=True, description="selective mixing + CutMix + split"),
    Variant("mixtrain-mixup", "mixtrain", "mixup", adaptive=True, description="selective mixing + MixUp + adaptive"),
    Variant("selective-nosplit", "mixtrain", "cutmix", description="selective mixing + CutMix, no split"),
    Variant("region1-only", "region1-only", "cutmix", split=True, description="Region 1 path only"),
    Variant("threshold-accuracy", "threshold-accuracy", "cutmix", split=True, description="mix the correct"),
    Variant("threshold-avgloss", "threshold-avgloss", "cutmix", split=True, description="mix below mean loss"),
    Variant("region1-all-region3", "region1-all-region3", "cutmix", split=True,
            description="Region 1 + every Region 3 sample"),
    Variant("skip-region3", "skip-region3", "cutmix", split=True, description="skip Region 3 entrants instead"),
    Variant("selective-backprop", rival="selective-backprop", description="Jiang et al. 2019"),
    Variant("stale-sb", rival="stale-sb", description="Selective-Backprop with stale losses"),
    Variant("minibatch-skip", rival="minibatch-skip", description="skip a random share of mini-batches"),
    Variant("input-scaling", rival="input-scaling", description="train on downscaled inputs"),
    Variant("infobatch", rival="infobatch", description="InfoBatch (Qin et al. 2024): prune well-learned samples, rescale"),
    # research variants (issue 12; not in the paper): mixTrain-CutMix's selection, trained otherwise
    Variant("mixtrain-cutmix-prune", "mixtrain", "cutmix", split=True, rival="mixtrain-prune",
            description="mixTrain-CutMix with half of S_mix pruned InfoBatch-style (rest at loss weight 2)"),
    Variant("mixtrain-cutmix-lrgate", "mixtrain", "cutmix", split=True, rival="mixtrain-lrgate",
            description="mixTrain-CutMix mixing only once the lr is at most mix_lr_fraction of its start"),
    # Our additions (not in the paper): see BENCHMARKS.md for why. The last epochs, at a low learning
    # rate, refine decision boundaries that mixing blurs, so they train unmixed.
    Variant("mixtrain-cutmix-anneal", "mixtrain", "cutmix", split=True, final_nomix_fraction=0.2,
            description="mixtrain-cutmix, last 20% of epochs unmixed"),
    Variant("mixtrain-cutmix-confident", "mixtrain-confident", "cutmix", split=True,
            description="mixtrain-cutmix, Region 1 only for samples also correct"),
    Variant("mixtrain-mixup-anneal", "mixtrain", "mixup", adaptive=True, final_nomix_fraction=0.2,
            description="mixtrain-mixup, last 20% of epochs unmixed"),
)


def resolve_variant(name: str, operator: str | None = None) -> Variant:
    """The variant, with the operator overridden where a run sets ``operator`` (split / adaptive follow it)."""
    v = VARIANTS[name]
    if operator is None or not v.mixes or operator == v.operator:
        return v
    interference = v.split or v.adaptive
    return dataclasses.replace(
        v, operator=operator, split=interference and operator == "cutmix", adaptive=interference and operator == "mixup"
    )
