"""The rollout controller's decision at each boundary (`swiperec.experiments.rollout.decide`):
SRM first, then a breached guardrail, the stage's time limit, the minimum sample, non-inferiority
of every check, and the last stage completing rather than advancing."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from swiperec.experiments.design import ExperimentConfig
from swiperec.experiments.rollout import decide

CONFIG = ExperimentConfig(stages=(10, 50, 100), stage_max_hours=24)


def experiment(stage: int = 0) -> dict:
    return {"name": "rollout-v2", "kind": "rollout", "stage": stage, "config": asdict(CONFIG)}


def result(*, srm_p=0.5, verdicts=None, coverage="non-inferior", ready=True) -> dict:
    verdicts = verdicts or {"like_rate": "non-inferior", "error_rate": "non-inferior"}
    return {
        "srm": {"sequential_pvalue": srm_p, "mismatch": srm_p < CONFIG.srm_threshold},
        "comparisons": {
            "candidate": {
                "min_sample_reached": ready,
                "guardrails": [{"metric": m, "verdict": v} for m, v in verdicts.items()],
                "coverage": {"metric": "coverage", "verdict": coverage},
            }
        },
    }


def test_everything_non_inferior_with_the_sample_advances():
    assert decide(experiment(0), result(), 1.0).action == "advance"


def test_the_last_stage_below_100_completes():
    assert decide(experiment(1), result(), 1.0).action == "complete"


@pytest.mark.parametrize(("srm_p", "action"), [(0.00099, "rollback"), (0.001, "advance")])
def test_srm_at_its_threshold(srm_p, action):
    decision = decide(experiment(), result(srm_p=srm_p), 1.0)
    assert decision.action == action
    if action == "rollback":
        assert "sample ratio mismatch" in decision.reason


def test_srm_wins_over_everything_else():
    both = result(srm_p=1e-9, verdicts={"like_rate": "breached"})
    assert decide(experiment(), both, 1.0).reason.startswith("sample ratio mismatch")


def test_a_breached_guardrail_rolls_back_even_before_the_minimum_sample():
    bad = result(verdicts={"like_rate": "breached", "error_rate": "inconclusive"}, ready=False)
    decision = decide(experiment(), bad, 0.1)
    assert decision.action == "rollback" and decision.reason == "guardrail breached: like_rate"


def test_coverage_beyond_its_margin_rolls_back():
    decision = decide(experiment(), result(coverage="breached"), 1.0)
    assert decision.action == "rollback" and "coverage" in decision.reason


@pytest.mark.parametrize(("hours", "action"), [(23.99, "hold"), (24.0, "rollback")])
def test_an_inconclusive_stage_is_rolled_back_at_its_time_limit(hours, action):
    pending = result(verdicts={"like_rate": "inconclusive"})
    assert decide(experiment(), pending, hours).action == action


def test_without_the_minimum_sample_it_holds():
    decision = decide(experiment(), result(ready=False), 1.0)
    assert decision.action == "hold" and "minimum sample" in decision.reason


def test_one_inconclusive_check_holds_and_names_it():
    decision = decide(experiment(), result(coverage="inconclusive"), 1.0)
    assert decision.action == "hold" and decision.reason.endswith("coverage")
