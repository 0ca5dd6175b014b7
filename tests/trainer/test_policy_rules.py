"""The amenability rule of METHOD.md, one hand-computed test per rule, through ``AmenabilityPolicy.step``.

Each test feeds a few synthetic epochs (per-sample loss, correct, mixed, trained) and checks the regions,
the thresholds and the decisions for the next epoch. The thresholds in the comments are computed by hand
from the unmixed observations of the earlier epochs.
"""

from __future__ import annotations

import math

import pytest
import torch

from mixtrain_trainer.policy import PATH_NAMES, AmenabilityPolicy

T, F = True, False


def step(policy, loss, correct, mixed=None, trained=None):
    n = len(loss)
    region, th = policy.step(
        torch.tensor(loss, dtype=torch.float32),
        torch.tensor(correct),
        torch.tensor(mixed if mixed is not None else [F] * n),
        torch.tensor(trained if trained is not None else [T] * n),
    )
    assert region.dtype == torch.int8
    return region.tolist(), th


def mix_next(policy):
    return policy.mix_next.tolist()


def paths(policy):
    return [PATH_NAMES[int(v)] for v in policy.path]


def approx(value):
    return pytest.approx(value, rel=1e-6)


def test_thresholds_are_undefined_after_epoch_0_so_epoch_1_mixes_nothing():
    p = AmenabilityPolicy("mixtrain", 4, 1, "cpu")
    region, th = step(p, [0.01, 1.0, 5.0, 9.0], [T, T, F, F])
    assert region == [0, 0, 0, 0]
    assert not bool(th.defined)
    assert math.isnan(float(th.l_corr)) and math.isnan(float(th.l_incorr)) and math.isnan(float(th.l_mid))
    assert mix_next(p) == [F, F, F, F] and paths(p) == ["", "", "", ""]
    # epoch 1 is classified with epoch 0's unmixed samples: L_corr = 0.505, L_incorr = 7, L_mid = 3.7525
    region, th = step(p, [0.5, 4.0, 8.0, 2.0], [T, F, F, T])
    assert float(th.l_corr) == approx(0.505) and float(th.l_incorr) == approx(7.0)
    assert float(th.l_mid) == approx(3.7525)
    assert region == [1, 2, 3, 1]


def test_no_mixing_while_one_average_has_no_observation():
    p = AmenabilityPolicy("mixtrain", 4, 1, "cpu")
    step(p, [1.0, 2.0, 3.0, 4.0], [T, T, T, T])  # epoch 0: no incorrect sample
    region, th = step(p, [0.1, 0.2, 0.3, 6.0], [T, T, T, F])  # epoch 1: L_incorr still undefined
    assert float(th.l_corr) == approx(2.5) and math.isnan(float(th.l_incorr))
    assert region == [0, 0, 0, 0] and mix_next(p) == [F, F, F, F]
    region, th = step(p, [0.1, 0.2, 0.3, 6.0], [T, T, T, F])  # epoch 2: both defined
    # L_corr = (1+2+3+4+0.1+0.2+0.3)/7 = 10.6/7, L_incorr = 6, L_mid = (10.6/7 + 6)/2
    assert float(th.l_corr) == approx(10.6 / 7) and float(th.l_incorr) == approx(6.0)
    assert region == [1, 1, 1, 2]
    assert mix_next(p) == [T, T, T, F]


def test_thresholds_are_a_cumulative_mean_over_unmixed_observations_only():
    # samples 0-3 unmixed; 4 and 5 mixed (extreme losses that must not count); 6 skipped (not trained)
    p = AmenabilityPolicy("mixtrain", 7, 1, "cpu")
    nan = float("nan")
    step(
        p,
        [1.0, 1.0, 1.0, 4.0, 100.0, 0.001, nan],
        [T, T, T, F, T, F, F],
        mixed=[F, F, F, F, T, T, F],
        trained=[T, T, T, T, T, T, F],
    )
    step(
        p,
        [2.0, 5.0, 6.0, 8.0, 100.0, 0.001, 50.0],
        [T, F, F, F, T, F, T],
        mixed=[F, F, F, F, T, T, F],
        trained=[T, T, T, T, T, T, F],
    )
    _, th = step(p, [1.0] * 7, [T] * 7, mixed=[T] * 7)  # epoch 2: everything mixed, adds nothing
    # L_corr = (1+1+1+2)/4 = 1.25 (the mean of the per-epoch means would be (1+2)/2 = 1.5)
    # L_incorr = (4+5+6+8)/4 = 5.75 (the mean of the per-epoch means would be (4+19/3)/2 = 5.1667)
    assert float(th.l_corr) == approx(1.25)
    assert float(th.l_incorr) == approx(5.75)
    assert float(th.l_mid) == approx(3.5)
    assert float(th.l_avg) == approx((5 + 23) / 8)
    _, th = step(p, [1.0] * 7, [T] * 7)  # epoch 3: epoch 2 was all mixed, so nothing changed
    assert float(th.l_corr) == approx(1.25) and float(th.l_incorr) == approx(5.75)


def test_region1_entry_stay_and_exit():
    # samples A, B, C, D = 0, 1, 2, 3; k = 1
    p = AmenabilityPolicy("mixtrain", 4, 1, "cpu")
    step(p, [1.0, 1.0, 1.0, 3.0], [T, T, T, F])  # epoch 0 -> L_corr 3/3 = 1, L_incorr 3/1 = 3
    # epoch 1: L_mid = 2. A 1.5 < 2 (Region 1), B 2.5 (Region 2), C 1.0 (Region 1), D 3.0 = L_incorr (Region 2)
    region, th = step(p, [1.5, 2.5, 1.0, 3.0], [T, F, T, F])
    assert float(th.l_mid) == approx(2.0)
    assert region == [1, 2, 1, 2]
    assert mix_next(p) == [T, F, T, F] and paths(p) == ["region1", "", "region1", ""]
    # epoch 1 unmixed: L_corr = (3+1.5+1)/5 = 1.1, L_incorr = (3+2.5+3)/3 = 8.5/3, L_mid = 1.96667
    # epoch 2: A and C mixed (entered via Region 1). A 1.9 < L_mid: stays; C 2.5 >= L_mid: leaves.
    # D 3.0 > L_incorr is Region 3 but its loss did not rise (3 -> 3): stays out.
    region, th = step(p, [1.9, 2.0, 2.5, 3.0], [T, F, T, F], mixed=[T, F, T, F])
    assert float(th.l_corr) == approx(1.1) and float(th.l_incorr) == approx(8.5 / 3)
    assert region == [1, 2, 2, 3]
    assert mix_next(p) == [T, F, F, F] and paths(p) == ["region1", "", "", ""]
    # epoch 2 unmixed: only B and D (incorrect): L_incorr = (8.5+2+3)/5 = 2.7; L_corr 1.1; L_mid = 1.9
    # epoch 3: A still mixed, 1.95 >= 1.9: leaves. B 0.5 and C 1.0 (both unmixed now) enter.
    region, th = step(p, [1.95, 0.5, 1.0, 2.0], [T, T, T, F], mixed=[T, F, F, F])
    assert float(th.l_incorr) == approx(2.7) and float(th.l_mid) == approx(1.9)
    assert region == [2, 1, 1, 2]
    assert mix_next(p) == [F, T, T, F] and paths(p) == ["", "region1", "region1", ""]


def _region3_epochs_0_and_1(p):
    """Epoch 0 -> L_corr 1, L_incorr (3+3+3+9)/4 = 4.5, L_mid 2.75. Epoch 1: sample 0 is Region 3 and rose
    (3 -> 5); sample 1 Region 2; sample 2 Region 1; sample 3 Region 2; sample 4 Region 3 but fell (9 -> 8)."""
    step(p, [3.0, 3.0, 1.0, 3.0, 9.0], [F, F, T, F, F])
    region, th = step(p, [5.0, 4.0, 1.0, 3.0, 8.0], [F, F, T, F, F])
    assert float(th.l_corr) == approx(1.0) and float(th.l_incorr) == approx(4.5)
    assert region == [3, 2, 1, 2, 3]
    # after epoch 1 (all unmixed): L_corr = 2/2 = 1, L_incorr = (18+5+4+3+8)/8 = 4.75, L_mid = 2.875


def test_region3_with_k1_enters_for_one_epoch_and_returns():
    p = AmenabilityPolicy("mixtrain", 5, 1, "cpu")
    _region3_epochs_0_and_1(p)
    assert mix_next(p) == [T, F, T, F, F]
    assert paths(p) == ["region3", "", "region1", "", ""]
    # epoch 2: sample 0 was mixed via Region 3: back to S_noMix even with a Region 1 loss (0.5).
    # Samples 1 (4 -> 6), 3 (3 -> 4.9) and 4 (8 -> 8.5) are Region 3 and rose in the last epoch: k = 1 mixes them.
    region, th = step(p, [0.5, 6.0, 1.0, 4.9, 8.5], [T, F, T, F, F], mixed=[T, F, T, F, F])
    assert float(th.l_incorr) == approx(4.75)
    assert region == [1, 3, 1, 3, 3]
    assert mix_next(p) == [F, T, T, T, T]
    assert paths(p) == ["", "region3", "region1", "region3", "region3"]


def test_region3_with_k2_needs_two_consecutive_rises():
    # anchors: 0 correct (loss 1), 1 incorrect (loss 4); samples 2 and 3 are incorrect
    p = AmenabilityPolicy("mixtrain", 4, 2, "cpu")
    step(p, [1.0, 4.0, 3.0, 5.0], [T, F, F, F])  # epoch 0 -> L_corr 1, L_incorr (4+3+5)/3 = 4
    # epoch 1: sample 2 is Region 3 and rose (3 -> 5), but only two losses exist: no k = 2 rise yet
    region, _ = step(p, [1.0, 4.0, 5.0, 3.0], [T, F, F, F])
    assert region == [1, 2, 3, 2]
    assert mix_next(p) == [T, F, F, F]
    # epoch 2 (L_incorr (12+12)/6 = 4): sample 2 rose twice (3 -> 5 -> 6): mixed via Region 3;
    # sample 3 is Region 3 and rose once (3 -> 4.5) after falling (5 -> 3): not mixed with k = 2.
    # Sample 0 was in S_mix alone, so it trained unmixed (the odd one out): it re-enters via Region 1.
    region, th = step(p, [1.0, 4.0, 6.0, 4.5], [T, F, F, F])
    assert float(th.l_incorr) == approx(4.0)
    assert region == [1, 2, 3, 3]
    assert mix_next(p) == [T, F, T, F] and paths(p) == ["region1", "", "region3", ""]
    # epoch 3 (L_incorr (24+14.5)/9): samples 0 and 2 are a composite. Sample 2 (Region 3 entrant) goes
    # back to S_noMix although its loss rose again; sample 3 now rose twice (3 -> 4.5 -> 5): mixed.
    region, th = step(p, [1.0, 4.0, 7.0, 5.0], [T, F, F, F], mixed=[T, F, T, F])
    assert float(th.l_incorr) == approx(38.5 / 9)
    assert region == [1, 2, 3, 3]
    assert mix_next(p) == [T, F, F, T] and paths(p) == ["region1", "", "", "region3"]


def test_region3_with_k1_ignores_a_rise_in_only_the_previous_epoch_when_k2():
    p1, p2 = AmenabilityPolicy("mixtrain", 4, 1, "cpu"), AmenabilityPolicy("mixtrain", 4, 2, "cpu")
    for p in (p1, p2):
        step(p, [1.0, 4.0, 3.0, 5.0], [T, F, F, F])
        step(p, [1.0, 4.0, 5.0, 3.0], [T, F, F, F])  # sample 2 rose once (3 -> 5)
    assert mix_next(p1)[2] is True and mix_next(p2)[2] is False


@pytest.mark.parametrize(("loss_e3", "mixed_next"), [(6.0, False), (9.0, True)])
def test_rising_rule_uses_losses_recorded_while_mixed(loss_e3, mixed_next):
    # anchors 0 (correct, 1) and 1 (incorrect, 4): L_corr 1, L_incorr 4, L_mid 2.5 throughout
    p = AmenabilityPolicy("mixtrain", 3, 1, "cpu")
    step(p, [1.0, 4.0, 1.0], [T, F, T])  # epoch 0
    step(p, [1.0, 4.0, 1.0], [T, F, T])  # epoch 1: samples 0 and 2 enter via Region 1
    assert mix_next(p) == [T, F, T]
    # epoch 2: 0 and 2 mixed; sample 2's loss jumps to 8 (Region 3): it leaves S_mix (rule 2) and, being
    # mixed, cannot enter via Region 3 in the same step
    step(p, [1.0, 4.0, 8.0], [T, F, F], mixed=[T, F, T])
    assert mix_next(p) == [T, F, F]
    # epoch 3: sample 2 unmixed and in Region 3. Its previous loss is 8 (recorded while mixed), not 1:
    # 6 did not rise (no mixing); 9 did (mixed via Region 3). Sample 0 trained alone (odd one out).
    region, th = step(p, [1.0, 4.0, loss_e3], [T, F, F])
    assert float(th.l_incorr) == approx(4.0) and region[2] == 3
    assert mix_next(p)[2] is mixed_next
    assert paths(p)[2] == ("region3" if mixed_next else "")


def test_region1_only_never_mixes_via_region3():
    p = AmenabilityPolicy("region1-only", 5, 1, "cpu")
    _region3_epochs_0_and_1(p)
    assert mix_next(p) == [F, F, T, F, F]  # the rising Region 3 sample 0 stays out
    assert paths(p) == ["", "", "region1", "", ""]


def test_region1_all_region3_mixes_every_region3_sample_while_it_is_there():
    p = AmenabilityPolicy("region1-all-region3", 5, 1, "cpu")
    _region3_epochs_0_and_1(p)
    assert mix_next(p) == [T, F, T, F, T]  # sample 4 fell (9 -> 8) but is Region 3: mixed too
    assert paths(p) == ["region3", "", "region1", "", "region3"]
    # epoch 2 (L_incorr 4.75, L_mid 2.875): sample 0 still Region 3 (6): stays; sample 4 now Region 2 (3): out
    region, _ = step(p, [6.0, 4.0, 1.0, 3.0, 3.0], [F, F, T, F, F], mixed=[T, F, T, F, T])
    assert region == [3, 2, 1, 2, 2]
    assert mix_next(p) == [T, F, T, F, F]


def test_skip_region3_skips_instead_of_mixing_for_one_epoch():
    p = AmenabilityPolicy("skip-region3", 5, 1, "cpu")
    _region3_epochs_0_and_1(p)
    assert mix_next(p) == [F, F, T, F, F]
    assert p.skip_next.tolist() == [T, F, F, F, F]
    assert paths(p) == ["region3", "", "region1", "", ""]
    # epoch 2: sample 0 skipped (not trained; the loop passes its last loss, 5). Sample 2 was alone in S_mix
    # (odd one out, unmixed). Samples 1 (4 -> 6) and 4 (8 -> 8.5) rise in Region 3: skipped next.
    step(p, [5.0, 6.0, 1.0, 3.0, 8.5], [F, F, T, F, F], trained=[F, T, T, T, T])
    assert mix_next(p) == [F, F, T, F, F]
    assert p.skip_next.tolist() == [F, T, F, F, T]  # sample 0 is back after one skipped epoch
    # L_incorr = (38 + 6 + 3 + 8.5)/11: the skipped sample adds nothing
    # epoch 3: sample 0 trains again, Region 3, and rose against its last *recorded* loss (5 -> 5.5)
    region, th = step(p, [5.5, 6.0, 1.0, 3.0, 8.5], [F, F, T, F, F], trained=[T, F, T, T, F])
    assert float(th.l_incorr) == approx(55.5 / 11)
    assert region[0] == 3
    assert p.skip_next.tolist() == [T, F, F, F, F]
    assert not (p.mix_next & p.skip_next).any()


def test_threshold_accuracy_mixes_the_samples_correct_when_unmixed():
    p = AmenabilityPolicy("threshold-accuracy", 4, 1, "cpu")
    step(p, [0.1, 0.2, 3.0, 4.0], [T, F, T, F])  # needs no thresholds: decides from epoch 0 on
    assert mix_next(p) == [T, F, T, F]
    assert paths(p) == ["accuracy", "", "accuracy", ""]
    step(p, [9.0, 0.3, 9.0, 9.0], [F, T, F, F], mixed=[T, F, T, F])
    assert mix_next(p) == [F, T, F, F]  # the loss plays no part, only correctness


def test_threshold_accuracy_keeps_mixing_a_sample_mixed_and_correct_in_e():
    """METHOD.md: mix exactly the samples correct in E, by how each was trained in E: a constituent that
    was mixed and correct (the operator's rule) is mixed again; unmixed ones by argmax; losses play no part."""
    p = AmenabilityPolicy("threshold-accuracy", 4, 1, "cpu")
    step(p, [0.1, 0.2, 3.0, 4.0], [T, T, F, F])
    assert mix_next(p) == [T, T, F, F]
    # epoch 1: 0 and 1 a composite; 0 correct as a constituent (high loss), 1 not; 3 correct unmixed
    step(p, [7.0, 0.1, 3.0, 4.0], [T, F, F, T], mixed=[T, T, F, F])
    assert mix_next(p) == [T, F, F, T]
    assert paths(p) == ["accuracy", "", "", "accuracy"]
    # epoch 2: 0 and 3 a composite, both correct: both stay mixed
    step(p, [5.0, 0.1, 0.1, 6.0], [T, F, F, T], mixed=[T, F, F, T])
    assert mix_next(p) == [T, F, F, T]


def test_threshold_avgloss_mixes_below_the_cumulative_mean_unmixed_loss():
    p = AmenabilityPolicy("threshold-avgloss", 4, 1, "cpu")
    _, th = step(p, [1.0, 2.0, 3.0, 6.0], [T, T, F, F])  # epoch 0: no mean yet: nothing mixed
    assert mix_next(p) == [F, F, F, F]
    _, th = step(p, [2.9, 3.1, 0.5, 10.0], [F, F, T, F])  # mean of epoch 0 = 3 (correct or not)
    assert float(th.l_avg) == approx(3.0)
    assert mix_next(p) == [T, F, T, F] and paths(p) == ["avgloss", "", "avgloss", ""]
    # epoch 2: mean = (12 + 16.5)/8 = 3.5625; the mixed samples' 100s must not enter later means
    _, th = step(p, [100.0, 3.5, 100.0, 3.6], [F, F, F, F], mixed=[T, F, T, F])
    assert float(th.l_avg) == approx(3.5625)
    assert mix_next(p) == [F, T, F, F]
    _, th = step(p, [1.0] * 4, [T] * 4)
    assert float(th.l_avg) == approx((28.5 + 3.5 + 3.6) / 10)


def test_naive_mixes_everything_and_none_nothing():
    naive, none = AmenabilityPolicy("naive", 3, 1, "cpu"), AmenabilityPolicy("none", 3, 1, "cpu")
    for _ in range(2):
        step(naive, [1.0, 2.0, 3.0], [T, F, T], mixed=[T, T, T])
        step(none, [1.0, 2.0, 3.0], [T, F, T])
        assert mix_next(naive) == [T, T, T] and mix_next(none) == [F, F, F]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown selection rule"):
        AmenabilityPolicy("sometimes", 3, 1, "cpu")


def test_state_dict_round_trip_gives_the_same_decisions():
    a = AmenabilityPolicy("mixtrain", 5, 1, "cpu")
    _region3_epochs_0_and_1(a)
    b = AmenabilityPolicy("mixtrain", 5, 1, "cpu")
    b.load_state_dict(a.state_dict())
    epoch2 = ([0.5, 6.0, 1.0, 4.9, 8.5], [T, F, T, F, F], [T, F, T, F, F])
    ra, tha = step(a, *epoch2)
    rb, thb = step(b, *epoch2)
    assert ra == rb and mix_next(a) == mix_next(b) and paths(a) == paths(b)
    assert float(tha.l_mid) == float(thb.l_mid)


def test_mixtrain_confident_needs_region1_and_correct():
    """Our variant's rule: Region 1 entry and stay also require the sample to be correct in E."""
    p = AmenabilityPolicy("mixtrain-confident", 4, 1, "cpu")
    step(p, [1.0, 1.0, 5.0, 5.0], [T, T, F, F])  # L_corr = 1, L_incorr = 5, L_mid = 3
    region, _ = step(p, [0.5, 0.5, 2.0, 8.0], [T, F, T, F])
    assert region == [1, 1, 1, 3]
    assert mix_next(p) == [T, F, T, T]  # sample 1 is in Region 1 but wrong: not amenable
    assert paths(p) == ["region1", "", "region1", "region3"]  # the Region 3 path is unchanged (8 > 5)
    # the plain rule would have mixed sample 1 too
    q = AmenabilityPolicy("mixtrain", 4, 1, "cpu")
    step(q, [1.0, 1.0, 5.0, 5.0], [T, T, F, F])
    step(q, [0.5, 0.5, 2.0, 8.0], [T, F, T, F])
    assert mix_next(q) == [T, T, T, T]
    # staying also needs correctness: mixed sample 0 is still below L_mid but now wrong
    step(p, [0.4, 0.5, 0.3, 9.0], [F, T, T, F], mixed=[T, F, T, T])
    assert mix_next(p)[0] is False and mix_next(p)[2] is True
