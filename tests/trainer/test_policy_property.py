"""Property test of the amenability policy over random sequences of epochs.

A plain-Python re-statement of METHOD.md's rules (thresholds, regions, rules 1-3, the Region 3 period k,
and the ablation rules built on them) runs beside ``AmenabilityPolicy`` and must agree on every region,
threshold and decision. Besides: every sample is in exactly one of S_mix / S_noMix (skipped samples in
S_noMix), and the region is 0 exactly while the thresholds are undefined.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixtrain_trainer.policy import PATH_NAMES, AmenabilityPolicy

RULES = ("mixtrain", "region1-only", "region1-all-region3", "skip-region3")
# quarters are exact in float32 and their sums exact in float64, so ties (loss == L_mid) are decided
# identically by the policy and by this reference
LOSSES = st.sampled_from([i / 4 for i in range(0, 25)])


class Reference:
    """METHOD.md, sample by sample."""

    def __init__(self, rule: str, n: int, k: int):
        self.rule, self.k = rule, k
        self.sum_c = self.sum_i = 0.0
        self.n_c = self.n_i = 0
        self.history = [[] for _ in range(n)]  # every recorded loss, mixed or not
        self.path = [""] * n  # why each sample is in S_mix / skipped for the next epoch
        self.mix = [False] * n
        self.skip = [False] * n

    def thresholds(self):
        l_corr = self.sum_c / self.n_c if self.n_c else math.nan
        l_incorr = self.sum_i / self.n_i if self.n_i else math.nan
        return l_corr, l_incorr, (l_corr + l_incorr) / 2

    def step(self, loss, correct, mixed, trained):
        l_corr, l_incorr, l_mid = self.thresholds()
        defined = self.n_c > 0 and self.n_i > 0
        regions, mix, skip, path = [], [], [], []
        for i, value in enumerate(loss):
            if not defined:
                region = 0
            else:
                region = 1 if value < l_mid else 3 if value > l_incorr else 2
            regions.append(region)
            if trained[i]:
                self.history[i].append(value)
            h = self.history[i]
            rose = len(h) > self.k and all(h[-1 - j] > h[-2 - j] for j in range(self.k))
            was_in = mixed[i] or not trained[i]  # a composite's constituent, or skipped (skip-region3)
            entered = self.path[i] if was_in else ""
            via1 = region == 1 and (not was_in or entered == "region1")  # rule 1 entry, rule 2 stay
            if self.rule == "region1-only":
                via3 = False
            elif self.rule == "region1-all-region3":
                via3 = region == 3 and not via1
            else:  # rule 1, second half; rule 3 sends a Region 3 entrant (or a skipped one) back
                via3 = region == 3 and rose and not was_in
            path.append("region1" if via1 else "region3" if via3 else "")
            if self.rule == "skip-region3":
                mix.append(via1)
                skip.append(via3)
            else:
                mix.append(via1 or via3)
                skip.append(False)
        for i, value in enumerate(loss):  # this epoch's unmixed samples join the thresholds afterwards
            if trained[i] and not mixed[i]:
                if correct[i]:
                    self.sum_c, self.n_c = self.sum_c + value, self.n_c + 1
                else:
                    self.sum_i, self.n_i = self.sum_i + value, self.n_i + 1
        self.mix, self.skip, self.path = mix, skip, path
        return regions, (l_corr, l_incorr, l_mid), defined


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=150, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    k=st.integers(1, 3),
    data=st.data(),
    n=st.integers(1, 10),
    epochs=st.integers(1, 7),
)
def test_policy_agrees_with_the_reference_over_random_epochs(rule, k, data, n, epochs):
    policy = AmenabilityPolicy(rule, n, k, "cpu")
    ref = Reference(rule, n, k)
    last = [math.nan] * n
    for _ in range(epochs):
        losses = data.draw(st.lists(LOSSES, min_size=n, max_size=n))
        correct = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        # form the epoch like the planner: S_mix pairs up, an odd one out trains unmixed; skipped ones don't train
        in_mix = [i for i in range(n) if ref.mix[i]]
        mixed = [False] * n
        for i in in_mix[: len(in_mix) // 2 * 2]:
            mixed[i] = True
        trained = [not s for s in ref.skip]
        loss = [losses[i] if trained[i] else last[i] for i in range(n)]  # the loop carries a skipped loss
        last = loss

        region, th = policy.step(
            torch.tensor(loss, dtype=torch.float32),
            torch.tensor(correct),
            torch.tensor(mixed),
            torch.tensor(trained),
        )
        want_region, (l_corr, l_incorr, l_mid), defined = ref.step(loss, correct, mixed, trained)

        assert region.tolist() == want_region
        assert bool(th.defined) == defined
        assert (region == 0).all().item() is (not defined)
        if defined:
            assert ((region >= 1) & (region <= 3)).all()
        assert _same(float(th.l_corr), l_corr) and _same(float(th.l_incorr), l_incorr)
        assert _same(float(th.l_mid), l_mid)

        mix_next, skip_next = policy.mix_next.tolist(), policy.skip_next.tolist()
        assert mix_next == ref.mix
        assert skip_next == ref.skip
        assert [PATH_NAMES[int(v)] for v in policy.path] == ref.path
        # every sample in exactly one of S_mix / S_noMix; a skipped sample is in S_noMix
        assert policy.mix_next.shape == (n,) and policy.mix_next.dtype == torch.bool
        assert not (policy.mix_next & policy.skip_next).any()
        assert sum(mix_next) + sum(not m for m in mix_next) == n
        # an entry path exactly for the samples in S_mix (or skipped)
        assert all((p != "") == (m or s) for p, m, s in zip(ref.path, mix_next, skip_next))
        if not defined:
            assert not any(mix_next) and not any(skip_next)
