"""A migration plan's stages and the boundaries of its entry condition and its gate."""

import pytest

from swiperec.migration.plan import (
    MigrationError,
    PlanConfig,
    Stage,
    entry_problems,
    gate_problems,
)
from swiperec.migration.real_users import AUC, RECALL


def data(users: int, swipes: int) -> dict:
    return {"window_days": 90, "real_users": users, "real_swipes": swipes}


def test_the_entry_condition_holds_exactly_at_its_minimums():
    stage = Stage(0.5, min_real_users=200, min_real_swipes=10_000)
    assert entry_problems(stage, data(200, 10_000)) == []
    assert entry_problems(stage, data(199, 10_000)) == [
        "199 real users in the last 90 days, the stage needs 200"
    ]
    assert entry_problems(stage, data(200, 9_999)) == [
        "9999 real swipes in the last 90 days, the stage needs 10000"
    ]
    assert len(entry_problems(stage, data(0, 0))) == 2


def comparison(candidate_auc, candidate_recall, serving_auc=0.60, serving_recall=0.20):
    return {
        "users": 100,
        "models": {
            "new": {AUC: candidate_auc, RECALL: candidate_recall},
            "old": {AUC: serving_auc, RECALL: serving_recall},
        },
    }


def test_the_gate_passes_exactly_at_its_margins_and_fails_beyond():
    stage = Stage(0.5, max_auc_drop=0.01, max_recall_drop=0.05)
    assert gate_problems(stage, comparison(0.59, 0.19), "new", "old") == []  # both at the edge
    assert gate_problems(stage, comparison(0.65, 0.30), "new", "old") == []  # better
    (auc,) = gate_problems(stage, comparison(0.5899, 0.19), "new", "old")
    assert "AUC like vs nope 0.5899 is more than 0.01 below the serving version's 0.6000" in auc
    (recall,) = gate_problems(stage, comparison(0.59, 0.1899), "new", "old")
    assert "Recall@50 0.1899 is more than 5% below the serving version's 0.2000" in recall
    assert len(gate_problems(stage, comparison(0.50, 0.10), "new", "old")) == 2
    # No real users in the test period: nothing shows the candidate is not worse.
    empty = {"users": 0, "models": {}}
    assert gate_problems(stage, empty, "new", "old") == [
        "no real users in the test period: the candidate cannot be compared"
    ]


def with_intervals(c: dict, auc_ci, recall_ci) -> dict:
    return {**c, "differences": {"new": {AUC: {"ci95": auc_ci}, RECALL: {"ci95": recall_ci}}}}


def test_a_drop_beyond_the_margin_refuses_only_when_it_is_significant():
    stage = Stage(0.5, max_auc_drop=0.01, max_recall_drop=0.05)
    both_beyond = comparison(0.58, 0.18)  # -0.02 AUC, -10 % Recall@50
    # The real users cannot tell it from noise: the intervals reach above 0.
    assert gate_problems(stage, with_intervals(both_beyond, [-0.05, 0.01], [-0.05, 0.0]),
                         "new", "old") == []  # fmt: skip
    # Significantly worse on Recall@50 only (its interval below 0): that one refuses.
    (recall,) = gate_problems(stage, with_intervals(both_beyond, [-0.05, 0.01], [-0.04, -0.001]),
                              "new", "old")  # fmt: skip
    assert recall.startswith("real users' Recall@50 0.1800 is more than 5% below")
    assert "(difference -0.0400 to -0.0010, 95 %)" in recall
    assert len(gate_problems(stage, with_intervals(both_beyond, [-0.05, -0.01], [-0.04, -0.01]),
                             "new", "old")) == 2  # fmt: skip
    # Significantly worse but within the margins: passes.
    within = with_intervals(comparison(0.595, 0.195), [-0.008, -0.002], [-0.009, -0.001])
    assert gate_problems(stage, within, "new", "old") == []


def test_a_strict_stage_refuses_any_drop():
    stage = Stage(0.0, max_auc_drop=0.0, max_recall_drop=0.0)
    assert gate_problems(stage, comparison(0.60, 0.20), "new", "old") == []
    assert len(gate_problems(stage, comparison(0.5999, 0.1999), "new", "old")) == 2


def test_the_default_plan_and_its_record_round_trip():
    config = PlanConfig.default(like_rating=3, nope_rating=2)
    assert [s.pseudo_user_weight for s in config.stages] == [1.0, 0.5, 0.25, 0.0]
    assert [s.min_real_users for s in config.stages] == [0, 200, 500, 1000]
    assert PlanConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stages": (Stage(1.0),)}, "at least two stages"),
        ({"stages": (Stage(0.5), Stage(1.0))}, "must not grow"),
        ({"stages": (Stage(1.0), Stage(-0.5))}, "stage 1: pseudo_user_weight must be a number"),
        ({"stages": (Stage(1.0), Stage(0.5, min_real_users=-1))}, "min_real_users must be"),
        ({"stages": (Stage(1.0), Stage(0.5, max_auc_drop=1.5))}, "max_auc_drop must be in"),
        ({"stages": (Stage(1.0), Stage(0.5)), "like_rating": 2, "nope_rating": 2}, "ratings"),
        ({"stages": (Stage(1.0), Stage(0.5)), "window_days": 0}, "window_days"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(fields, message):
    with pytest.raises(MigrationError, match=message):
        PlanConfig(**fields)
