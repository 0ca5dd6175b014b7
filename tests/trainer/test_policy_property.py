"""Property test of the amenability policy over random sequences of epochs.

A plain-Python re-statement of METHOD.md's rules (thresholds as a cumulative mean or an EMA, regions,
rules 1-3, the Region 3 period k, and every selection rule of the variants) runs beside
``AmenabilityPolicy`` and must agree on every region, threshold and decision. Besides: the epoch the
planner forms from a decision trains every sample not skipped exactly once, mixing exactly the S_mix
members (but an odd one out), and the region is 0 exactly while the thresholds are undefined.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixtrain_trainer.policy import PATH_NAMES, AmenabilityPolicy
from mixtrain_trainer.rules import RULES as REGISTERED
from mixtrain_trainer.sampler import plan_epoch

RULES = ("none", "naive", "mixtrain", "region1-only", "region1-all-region3", "skip-region3", "mixtrain-confident",
         "threshold-accuracy", "threshold-avgloss")
EMA_DECAY = 0.75
# quarters are exact in float32 and their sums exact in float64, so ties (loss == L_mid) are decided
# identically by the policy and by this reference
LOSSES = st.sampled_from([i / 4 for i in range(0, 25)])


class Reference:
    """METHOD.md, sample by sample."""

    def __init__(self, rule: str, n: int, k: int, averaging: str = "cumulative"):
        self.rule, self.k, self.averaging = rule, k, averaging
        self.sum_c = self.sum_i = 0.0
        self.n_c = self.n_i = 0
        self.ema = [math.nan, math.nan, math.nan]  # corr, incorr, all: EMA of the per-epoch means
        self.history = [[] for _ in range(n)]  # every recorded loss, mixed or not
        self.path = [""] * n  # why each sample is in S_mix / skipped for the next epoch
        self.mix = [False] * n
        self.skip = [False] * n

    def thresholds(self):
        if self.averaging == "ema":
            l_corr, l_incorr, l_avg = self.ema
        else:
            l_corr = self.sum_c / self.n_c if self.n_c else math.nan
            l_incorr = self.sum_i / self.n_i if self.n_i else math.nan
            n = self.n_c + self.n_i
            l_avg = (self.sum_c + self.sum_i) / n if n else math.nan
        return l_corr, l_incorr, (l_corr + l_incorr) / 2, l_avg

    def step(self, loss, correct, mixed, trained):
        l_corr, l_incorr, l_mid, l_avg = self.thresholds()
        defined = not math.isnan(l_corr) and not math.isnan(l_incorr)
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
            if self.rule in ("none", "naive"):
                mix.append(self.rule == "naive")
                skip.append(False)
                path.append("")
                continue
            if self.rule == "threshold-accuracy":  # correct in E, mixed or not
                mix.append(bool(correct[i]))
                skip.append(False)
                path.append("accuracy" if correct[i] else "")
                continue
            if self.rule == "threshold-avgloss":
                below = not math.isnan(l_avg) and value < l_avg
                mix.append(below)
                skip.append(False)
                path.append("avgloss" if below else "")
                continue
            amenable = region == 1 and (correct[i] or self.rule != "mixtrain-confident")
            via1 = amenable and (not was_in or entered == "region1")  # rule 1 entry, rule 2 stay
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
        epoch = [[0.0, 0], [0.0, 0]]  # this epoch's unmixed samples join the thresholds afterwards
        for i, value in enumerate(loss):
            if trained[i] and not mixed[i]:
                epoch[0 if correct[i] else 1][0] += value
                epoch[0 if correct[i] else 1][1] += 1
        (s_c, n_c), (s_i, n_i) = epoch
        self.sum_c, self.n_c, self.sum_i, self.n_i = self.sum_c + s_c, self.n_c + n_c, self.sum_i + s_i, self.n_i + n_i
        now = [s_c / n_c if n_c else math.nan, s_i / n_i if n_i else math.nan,
               (s_c + s_i) / (n_c + n_i) if n_c + n_i else math.nan]
        for j, value in enumerate(now):  # an epoch without observations leaves the average as it was
            if not math.isnan(value):
                old = self.ema[j]
                self.ema[j] = value if math.isnan(old) else EMA_DECAY * old + (1 - EMA_DECAY) * value
        self.mix, self.skip, self.path = mix, skip, path
        return regions, (l_corr, l_incorr, l_mid, l_avg), defined


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_the_reference_covers_every_registered_rule():
    assert set(RULES) == set(REGISTERED)


@settings(max_examples=250, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    averaging=st.sampled_from(["cumulative", "ema"]),
    k=st.integers(1, 3),
    data=st.data(),
    n=st.integers(1, 10),
    epochs=st.integers(1, 7),
)
def test_policy_agrees_with_the_reference_over_random_epochs(rule, averaging, k, data, n, epochs):
    policy = AmenabilityPolicy(rule, n, k, "cpu", averaging=averaging, ema_decay=EMA_DECAY)
    ref = Reference(rule, n, k, averaging)
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
        want_region, (l_corr, l_incorr, l_mid, l_avg), defined = ref.step(loss, correct, mixed, trained)

        assert region.tolist() == want_region
        assert bool(th.defined) == defined
        assert (region == 0).all().item() is (not defined)
        if defined:
            assert ((region >= 1) & (region <= 3)).all()
        assert _same(float(th.l_corr), l_corr) and _same(float(th.l_incorr), l_incorr)
        assert _same(float(th.l_mid), l_mid) and _same(float(th.l_avg), l_avg)

        mix_next, skip_next = policy.mix_next.tolist(), policy.skip_next.tolist()
        assert mix_next == ref.mix
        assert skip_next == ref.skip
        assert [PATH_NAMES[int(v)] for v in policy.path] == ref.path
        # the next epoch as the planner forms it: every sample not skipped trained exactly once, the
        # S_mix members mixed (but an odd one out), nobody else; a skipped sample is in S_noMix
        assert policy.mix_next.shape == (n,) and policy.mix_next.dtype == torch.bool
        assert not (policy.mix_next & policy.skip_next).any()
        plan = plan_epoch(policy.mix_next, 4, torch.Generator().manual_seed(n), skip=policy.skip_next)
        comp = plan.second >= 0
        trained_next = torch.cat([plan.first, plan.second[comp]])
        assert sorted(trained_next.tolist()) == [i for i in range(n) if not skip_next[i]]
        mixed_next = set(plan.first[comp].tolist()) | set(plan.second[comp].tolist())
        members = {i for i in range(n) if mix_next[i]}
        assert mixed_next <= members and len(members - mixed_next) == len(members) % 2
        # an entry path exactly for the samples in S_mix (or skipped), where the rule gives paths
        if rule not in ("none", "naive"):
            assert all((p != "") == (m or s) for p, m, s in zip(ref.path, mix_next, skip_next))
        if not defined and rule not in ("naive", "threshold-accuracy", "threshold-avgloss"):
            assert not any(mix_next) and not any(skip_next)
