"""Every branch of decide_verdict, in the order the rules apply."""

from __future__ import annotations

from worker.audit.verdict import decide_verdict

# A gradient attack that ran all 20 steps, kept the label and left the map mostly in place.
ROBUST_CASE = dict(
    original_map_is_zero=False,
    attack_name="topk",
    attack_found=True,
    attack_topk=0.8,
    attack_gradient_steps=20,
    attack_uses_gradient=True,
    baseline_found=True,
    baseline_topk=0.9,
    steps=20,
    threshold=0.5,
)


def verdict_for(**changes):
    return decide_verdict(**{**ROBUST_CASE, **changes})


def test_robust_when_search_ran_and_map_held():
    result = verdict_for()

    assert result.verdict == "robust"
    assert "0.80" in result.reason  # the worst top-k intersection of the two
    assert "20 steps" in result.reason


def test_zero_map_is_inconclusive():
    # Even a "moved" map cannot be judged when the original has no ranking.
    result = verdict_for(original_map_is_zero=True, attack_topk=0.0)

    assert result.verdict == "inconclusive"
    assert "zero everywhere" in result.reason


def test_attack_below_threshold_is_fragile():
    result = verdict_for(attack_topk=0.3)

    assert result.verdict == "fragile"
    assert "topk attack" in result.reason
    assert "0.30" in result.reason


def test_baseline_below_threshold_is_fragile():
    result = verdict_for(attack_topk=0.7, baseline_topk=0.4)

    assert result.verdict == "fragile"
    assert "random-sign baseline" in result.reason


def test_threshold_itself_is_not_fragile():
    assert verdict_for(attack_topk=0.5, baseline_topk=0.5).verdict == "robust"


def test_no_label_preserving_iterate_is_inconclusive():
    result = verdict_for(attack_found=False, baseline_found=False, attack_topk=0.0)

    assert result.verdict == "inconclusive"
    assert "kept the predicted label" in result.reason


def test_baseline_fragile_wins_over_missing_attack():
    result = verdict_for(attack_found=False, attack_topk=0.0, baseline_topk=0.2)

    assert result.verdict == "fragile"
    assert "random-sign baseline" in result.reason


def test_attack_result_ignored_when_not_found():
    # A low top-k of an attack that never kept the label must not count as fragile.
    result = verdict_for(attack_found=False, attack_topk=0.1, baseline_topk=0.9)

    assert result.verdict == "inconclusive"


def test_zero_gradient_on_all_steps_never_robust():
    result = verdict_for(attack_gradient_steps=0, attack_topk=1.0, baseline_topk=0.9)

    assert result.verdict == "inconclusive"
    assert "gradient" in result.reason
    assert "20 of 20 steps" in result.reason


def test_zero_gradient_but_map_moved_is_fragile():
    result = verdict_for(attack_gradient_steps=0, attack_topk=1.0, baseline_topk=0.2)

    assert result.verdict == "fragile"


def test_mostly_zero_gradient_not_robust():
    result = verdict_for(attack_gradient_steps=9)
    assert result.verdict == "inconclusive"
    assert "11 of 20 steps" in result.reason


def test_half_usable_gradient_can_be_robust():
    assert verdict_for(attack_gradient_steps=10).verdict == "robust"


def test_random_only_is_not_robust():
    result = verdict_for(
        attack_name="random", attack_uses_gradient=False, attack_topk=0.9, baseline_topk=0.95
    )

    assert result.verdict == "inconclusive"
    assert "random-sign" in result.reason


def test_random_only_can_be_fragile():
    result = verdict_for(attack_name="random", attack_uses_gradient=False, attack_topk=0.3)

    assert result.verdict == "fragile"


def test_short_search_not_robust():
    result = verdict_for(epsilon=8 / 255, step_size=0.25 / 255)
    assert result.verdict == "inconclusive"
    assert "at most 5.0/255, less than epsilon 8.0/255" in result.reason


def test_short_search_can_be_fragile():
    result = verdict_for(epsilon=8 / 255, step_size=0.25 / 255, attack_topk=0.1)
    assert result.verdict == "fragile"
