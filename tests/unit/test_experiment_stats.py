"""A/B test statistics against hand computations, numerical integration and simulation."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.integrate
import scipy.stats

from swiperec.experiments import stats
from swiperec.experiments.stats import Sequential

Z95 = scipy.stats.norm.isf(0.025)


# --- srm ------------------------------------------------------------------------------------


def test_srm_matches_the_chi_square_computed_by_hand():
    result = stats.srm({"control": 5000, "treatment": 5300}, {"control": 1, "treatment": 1})
    # expected 5150 each: chi2 = 2 * 150^2 / 5150 = 8.7379 on 1 degree of freedom
    chi2 = 2 * 150**2 / 5150
    assert result.chi2 == pytest.approx(chi2, rel=1e-12)
    assert result.pvalue == pytest.approx(scipy.stats.chi2.sf(chi2, df=1), rel=1e-10)
    assert result.pvalue == pytest.approx(0.0031, abs=1e-4)
    assert result.expected_shares == {"control": 0.5, "treatment": 0.5}
    assert result.counts == {"control": 5000, "treatment": 5300}
    # One look would call it at 0.01; a test valid at every look needs more: 0.13 here.
    assert result.sequential_pvalue == pytest.approx(0.1349, abs=1e-4)
    assert not result.mismatch
    assert not stats.srm(
        {"control": 5000, "treatment": 5300}, {"control": 1, "treatment": 1}, threshold=0.01
    ).mismatch


def test_the_sequential_srm_bayes_factor_matches_numerical_integration():
    # Two arms: BF = E over theta ~ Beta(c p1, c p2) of theta^x1 (1 - theta)^x2, divided by
    # p1^x1 p2^x2.
    for x, p, c in [((30, 12), (0.5, 0.5), 100.0), ((8, 3), (0.9, 0.1), 10.0),
                    ((150, 140), (0.6, 0.4), 2.0)]:  # fmt: skip
        prior = scipy.stats.beta(c * p[0], c * p[1])

        def integrand(t, x=x, prior=prior):
            return t ** x[0] * (1 - t) ** x[1] * prior.pdf(t)

        marginal, _ = scipy.integrate.quad(integrand, 0, 1, epsabs=0, epsrel=1e-10, limit=200)
        expected = math.log(marginal) - x[0] * math.log(p[0]) - x[1] * math.log(p[1])
        assert stats.srm_log_bayes_factor(x, p, c) == pytest.approx(expected, rel=1e-6)


def test_the_sequential_srm_keeps_its_false_alarms_under_its_threshold_at_every_look():
    # 2,000 balanced A/A assignments of 1,000 users, checked after every 10th user: the share
    # ever flagged by the always-valid p at 0.05 stays below 0.05; the chi-square test at the
    # same looks would flag far more.
    rng = np.random.default_rng(7)
    treatment = np.cumsum(rng.random((2000, 1000)) < 0.5, axis=1)[:, 9::10]
    n = np.arange(10, 1001, 10)
    c = stats.SRM_PRIOR_CONCENTRATION
    ever_sequential = sum(
        max(
            stats.srm_log_bayes_factor((k - t, t), (0.5, 0.5), c)
            for t, k in zip(row, n, strict=True)
        )
        > math.log(1 / 0.05)
        for row in treatment
    )
    ever_chi2 = (np.abs((2 * treatment - n) / np.sqrt(n)) > 1.96).any(axis=1).sum()
    assert ever_sequential / 2000 < 0.05
    assert ever_chi2 / 2000 > 0.2


def test_srm_balanced_split_is_no_mismatch_and_a_clear_imbalance_is():
    shares = {"control": 0.5, "treatment": 0.5}
    balanced = stats.srm({"control": 5000, "treatment": 5000}, shares)
    assert balanced.chi2 == 0 and balanced.pvalue == pytest.approx(1.0)
    assert balanced.sequential_pvalue == 1.0 and not balanced.mismatch
    skewed = stats.srm({"control": 5000, "treatment": 5500}, shares)
    # chi2 = 2 * 250^2 / 5250 = 23.8, p ~ 1e-6; always-valid 7.8e-5
    assert skewed.chi2 == pytest.approx(2 * 250**2 / 5250)
    assert skewed.pvalue < 1e-5 and skewed.sequential_pvalue < 1e-4 and skewed.mismatch


def test_srm_three_arms_with_a_holdout_share():
    expected = {"control": 45, "treatment": 45, "holdout": 10}  # normalised to 0.45/0.45/0.10
    fine = stats.srm({"control": 4510, "treatment": 4470, "holdout": 1020}, expected)
    e = np.array([4500, 4500, 1000])
    o = np.array([4510, 4470, 1020])
    assert fine.chi2 == pytest.approx(((o - e) ** 2 / e).sum())
    assert fine.pvalue == pytest.approx(scipy.stats.chi2.sf(fine.chi2, df=2))
    assert fine.expected_shares == pytest.approx(
        {"control": 0.45, "treatment": 0.45, "holdout": 0.1}
    )
    assert not fine.mismatch
    # a holdout that leaks users into the arms: 30% too small
    leaky = stats.srm({"control": 4650, "treatment": 4650, "holdout": 700}, expected)
    assert leaky.mismatch


def test_srm_an_arm_without_users_counts_as_zero_and_no_users_is_no_evidence():
    empty_arm = stats.srm({"control": 400}, {"control": 0.5, "treatment": 0.5})
    assert empty_arm.counts == {"control": 400, "treatment": 0} and empty_arm.mismatch
    nobody = stats.srm({"control": 0, "treatment": 0}, {"control": 0.5, "treatment": 0.5})
    assert (nobody.chi2, nobody.pvalue, nobody.mismatch) == (0.0, 1.0, False)


@pytest.mark.parametrize(
    ("counts", "expected", "message"),
    [
        ({"control": 10, "canary": 3}, {"control": 1, "treatment": 1}, "canary"),
        ({"control": 10, "treatment": 9}, {"control": 1, "treatment": 0}, "treatment"),
        ({"control": 10, "treatment": 9}, {"control": 1, "treatment": -1}, "positive"),
        ({"control": 10}, {"control": 1}, "two arms"),
    ],
)
def test_srm_rejects_inconsistent_designs(counts, expected, message):
    with pytest.raises(ValueError, match=message):
        stats.srm(counts, expected)


# --- ratio_effect ---------------------------------------------------------------------------


def users(n: int, seed: int, *, uplift: float = 0.0, share_new: float = 0.3) -> pd.DataFrame:
    """Users with a personal like propensity and activity, seen in the pre-period and now.

    The pre-period shares the propensity, so `likes_pre / served_pre` predicts the like-rate;
    `share_new` of the users have no history (0 and 0).
    """
    rng = np.random.default_rng(seed)
    arm = np.where(rng.random(n) < 0.5, "control", "treatment")
    propensity = rng.beta(2, 14, n)
    activity = rng.gamma(2.0, 10.0, n)
    served = rng.poisson(activity) + 1
    rate = np.clip(propensity * np.where(arm == "treatment", 1 + uplift, 1.0), 0, 1)
    served_pre = np.where(rng.random(n) < share_new, 0, rng.poisson(activity))
    return pd.DataFrame(
        {
            "arm": arm,
            "likes": rng.binomial(served, rate),
            "served": served,
            "likes_pre": rng.binomial(served_pre, propensity),
            "served_pre": served_pre,
        }
    )


def delta_method_variance(likes: np.ndarray, served: np.ndarray) -> float:
    """Var(mean(likes) / mean(served)) by Deng et al. 2018, with sample (ddof=1) moments."""
    n = len(likes)
    mu_x, mu_y = served.mean(), likes.mean()
    var_x, var_y = served.var(ddof=1), likes.var(ddof=1)
    cov_xy = np.cov(likes, served, ddof=1)[0, 1]
    return (var_y / mu_x**2 - 2 * mu_y * cov_xy / mu_x**3 + mu_y**2 * var_x / mu_x**4) / n


def test_ratio_effect_a_tiny_frame_worked_by_hand():
    frame = pd.DataFrame(
        {
            "arm": ["control", "control", "treatment", "treatment", "holdout"],
            "likes": [1, 3, 2, 2, 50],
            "served": [2, 4, 2, 6, 60],
        }
    )
    effect = stats.ratio_effect(frame, "likes", "served")
    # control 4/6 = 2/3, treatment 4/8 = 1/2; the holdout row is ignored
    assert (effect.control_arm, effect.treatment_arm) == ("control", "treatment")
    assert (effect.n_control, effect.n_treatment) == (2, 2)
    assert effect.control == pytest.approx(2 / 3)
    assert effect.treatment == pytest.approx(1 / 2)
    assert effect.effect == pytest.approx(-1 / 6)
    assert effect.rel_effect == pytest.approx(-1 / 4)
    assert effect.variance_reduction is None


def test_ratio_effect_equals_the_delta_method_computed_directly():
    frame = users(3000, seed=1, uplift=0.05)
    effect = stats.ratio_effect(frame, "likes", "served")
    control, treatment = (frame[frame.arm == a] for a in ("control", "treatment"))
    rate_c = control.likes.sum() / control.served.sum()
    rate_t = treatment.likes.sum() / treatment.served.sum()
    se = math.sqrt(
        delta_method_variance(control.likes.to_numpy(), control.served.to_numpy())
        + delta_method_variance(treatment.likes.to_numpy(), treatment.served.to_numpy())
    )
    assert effect.control == pytest.approx(rate_c, rel=1e-12)
    assert effect.treatment == pytest.approx(rate_t, rel=1e-12)
    assert effect.effect == pytest.approx(rate_t - rate_c, rel=1e-9)
    assert effect.se == pytest.approx(se, rel=1e-9)
    assert effect.ci_lower == pytest.approx(rate_t - rate_c - Z95 * se, rel=1e-9)
    assert effect.ci_upper == pytest.approx(rate_t - rate_c + Z95 * se, rel=1e-9)
    z = (rate_t - rate_c) / se
    assert effect.pvalue == pytest.approx(2 * scipy.stats.norm.sf(abs(z)), rel=1e-6)
    assert effect.rel_effect == pytest.approx(rate_t / rate_c - 1, rel=1e-9)
    assert effect.rel_ci_lower < effect.rel_effect < effect.rel_ci_upper
    assert (effect.n_control, effect.n_treatment) == (len(control), len(treatment))


def test_ratio_effect_alpha_sets_the_ci_width():
    frame = users(1000, seed=2)
    wide = stats.ratio_effect(frame, "likes", "served", alpha=0.01)
    narrow = stats.ratio_effect(frame, "likes", "served", alpha=0.2)
    assert wide.se == pytest.approx(narrow.se, rel=1e-9)
    half = scipy.stats.norm.isf(0.005) * wide.se
    assert wide.ci_upper - wide.ci_lower == pytest.approx(2 * half, rel=1e-9)
    assert narrow.ci_upper - narrow.ci_lower < wide.ci_upper - wide.ci_lower


def test_cuped_reduces_the_variance_with_a_correlated_pre_period_only():
    frame = users(3000, seed=3)
    plain = stats.ratio_effect(frame, "likes", "served")
    cuped = stats.ratio_effect(
        frame, "likes", "served", numer_pre="likes_pre", denom_pre="served_pre"
    )
    assert cuped.variance_reduction == pytest.approx(1 - (cuped.se / plain.se) ** 2, rel=1e-9)
    assert cuped.variance_reduction > 0.2
    assert (cuped.control, cuped.treatment) == (plain.control, plain.treatment)
    # a pre-period of other users' behaviour predicts nothing
    shuffled = frame.assign(
        likes_pre=frame.likes_pre.sample(frac=1, random_state=0).to_numpy(),
        served_pre=frame.served_pre.sample(frac=1, random_state=0).to_numpy(),
    )
    noise = stats.ratio_effect(
        shuffled, "likes", "served", numer_pre="likes_pre", denom_pre="served_pre"
    )
    assert abs(noise.variance_reduction) < 0.02


def test_cuped_is_unbiased_and_tighter_across_aa_replicates():
    replicates = [users(400, seed=100 + i) for i in range(24)]
    cuped = [
        stats.ratio_effect(f, "likes", "served", numer_pre="likes_pre", denom_pre="served_pre")
        for f in replicates
    ]
    adjusted = np.array([e.effect for e in cuped])
    unadjusted = np.array([e.treatment - e.control for e in cuped])
    spread = adjusted.std(ddof=1)
    # seen: mean 0.0054 with 0.0023 standard error (300 replicates elsewhere: -0.00005 +- 0.0006)
    assert abs(adjusted.mean()) < 4 * spread / math.sqrt(len(adjusted))
    assert spread < 0.9 * unadjusted.std(ddof=1)
    # the reported SE describes the spread across replicates
    assert np.mean([e.se for e in cuped]) == pytest.approx(spread, rel=0.35)


def test_cuped_estimate_changes_sign_when_the_arm_labels_are_swapped():
    # with exchangeable arms this antisymmetry is what makes the A/A estimate centred on 0
    frame = users(800, seed=5, uplift=0.1)
    swapped = frame.assign(arm=frame.arm.map({"control": "treatment", "treatment": "control"}))
    kwargs = {"numer_pre": "likes_pre", "denom_pre": "served_pre"}
    effect = stats.ratio_effect(frame, "likes", "served", **kwargs)
    mirror = stats.ratio_effect(swapped, "likes", "served", **kwargs)
    assert mirror.effect == pytest.approx(-effect.effect, rel=1e-9)
    assert mirror.se == pytest.approx(effect.se, rel=1e-9)


def test_ratio_effect_zero_variance_metric_is_exact_and_quiet():
    frame = pd.DataFrame(
        {"arm": ["control"] * 3 + ["treatment"] * 3, "errors": 0, "requests": [5, 3, 2, 4, 4, 1]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        effect = stats.ratio_effect(frame, "errors", "requests")
    assert (effect.effect, effect.se, effect.ci_lower, effect.ci_upper) == (0, 0, 0, 0)
    assert effect.pvalue == 1.0


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        ({"arm": "control"}, {}, "arm 'treatment' has no users"),
        ({"served": 0}, {}, "arm 'control' has a zero sum of 'served'"),
        ({"served_pre": 0}, {"numer_pre": "likes_pre", "denom_pre": "served_pre"}, "served_pre"),
        ({}, {"numer_pre": "clicks_pre", "denom_pre": "served_pre"}, "lacks columns: clicks_pre"),
        ({}, {"denom_pre": "served_pre"}, "needs numer_pre"),
        ({}, {"treatment": "control"}, "same arm"),
    ],
)
def test_ratio_effect_says_which_arm_and_column_lack_data(change, kwargs, message):
    frame = users(50, seed=4)
    for column, value in change.items():
        if column == "arm":
            frame[column] = value
        else:
            frame.loc[frame.arm == "control", column] = value
    with pytest.raises(ValueError, match=message):
        stats.ratio_effect(frame, "likes", "served", **kwargs)


# --- sequential -----------------------------------------------------------------------------

CASES = [  # (effect, V, tau^2)
    (0.0, 1.0, 1.0),
    (0.3, 0.01, 0.05),
    (-0.02, 1e-4, 5e-4),
    (1.5, 0.5, 2.0),
    (0.004, 2e-6, 1.6e-5),
]


@pytest.mark.parametrize(("effect", "variance", "tau2"), CASES)
def test_closed_form_lambda_is_the_normal_mixture_likelihood_ratio(effect, variance, tau2):
    def integrand(theta):
        likelihood_ratio = math.exp(theta * effect / variance - theta**2 / (2 * variance))
        return likelihood_ratio * scipy.stats.norm.pdf(theta, scale=math.sqrt(tau2))

    # the integrand is a Gaussian bump: centre and width of theta's posterior
    centre = effect * tau2 / (variance + tau2)
    width = math.sqrt(variance * tau2 / (variance + tau2))
    integral, _ = scipy.integrate.quad(
        integrand,
        centre - 40 * width,
        centre + 40 * width,
        points=[centre],
        epsabs=0,
        epsrel=1e-12,
        limit=200,
    )
    closed = stats.mixture_likelihood_ratio(effect, variance, tau2)
    assert float(closed) == pytest.approx(integral, rel=1e-8)


@pytest.mark.parametrize(
    ("effect", "se", "n", "planned_n"),
    [(0.01, 0.004, 500, 2000), (-2.0, 1.3, 90, 100), (0.0, 0.1, 4000, 2000)],
)
def test_confidence_sequence_bounds_are_where_inverse_lambda_equals_alpha(effect, se, n, planned_n):
    alpha = 0.05
    seq = stats.sequential(effect, se, n=n, planned_n=planned_n, alpha=alpha)
    tau2 = stats.mixing_variance(se**2, n=n, planned_n=planned_n, alpha=alpha)
    assert seq.ci_upper - effect == pytest.approx(effect - seq.ci_lower, rel=1e-12)

    def inverse_lambda(theta):
        return 1 / float(stats.mixture_likelihood_ratio(effect - theta, se**2, tau2))

    for bound in (seq.ci_lower, seq.ci_upper):
        assert inverse_lambda(bound) == pytest.approx(alpha, rel=1e-9)
    inside, outside = (
        effect + 0.99 * (seq.ci_upper - effect),
        effect + 1.01 * (seq.ci_upper - effect),
    )
    assert inverse_lambda(inside) > alpha > inverse_lambda(outside)
    # and the p-value is 1/Lambda at theta = 0
    assert seq.pvalue == pytest.approx(min(1.0, inverse_lambda(0.0)), rel=1e-12)
    assert seq.significant == (not seq.ci_lower <= 0 <= seq.ci_upper)


def test_mixing_variance_makes_the_sequence_tightest_near_the_planned_sample():
    alpha, planned_variance = 0.05, 1e-4  # variance at the planned sample
    tau2 = stats.mixing_variance(4e-4, n=250, planned_n=1000, alpha=alpha)
    assert tau2 == pytest.approx(
        planned_variance * (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha)))
    )
    grid = planned_variance * np.geomspace(0.1, 100, 4001)
    radii = stats.confidence_sequence_radius(planned_variance, grid, alpha)
    ours = float(stats.confidence_sequence_radius(planned_variance, tau2, alpha))
    assert ours <= radii.min() * 1.001
    # and the width at the planned sample is about 3 SE, not 1.96: the price of peeking
    assert ours / math.sqrt(planned_variance) == pytest.approx(3.03, abs=0.01)


def test_running_pvalue_never_increases():
    estimates = [(0.05, 0.05), (0.09, 0.035), (0.02, 0.03), (0.08, 0.025), (0.0, 0.02)]
    pvalue, history = 1.0, []
    for look, (effect, se) in enumerate(estimates, start=1):
        seq = stats.sequential(effect, se, n=200 * look, planned_n=1000, previous_pvalue=pvalue)
        alone = stats.sequential(effect, se, n=200 * look, planned_n=1000)
        assert seq.pvalue == min(pvalue, alone.pvalue)
        assert (seq.ci_lower, seq.ci_upper) == (alone.ci_lower, alone.ci_upper)
        pvalue = seq.pvalue
        history.append(pvalue)
    assert history == sorted(history, reverse=True)
    assert history[1] < history[0]
    assert history[2] == history[1] and history[4] == history[3]  # looks 3 and 5 add nothing


def test_no_users_keep_the_previous_pvalue_and_an_infinite_interval():
    seq = stats.sequential(0.3, 0.1, n=0, planned_n=1000)
    assert seq == Sequential(1.0, -math.inf, math.inf, False)
    carried = stats.sequential(0.3, 0.1, n=0, planned_n=1000, previous_pvalue=0.01)
    assert carried.pvalue == 0.01 and carried.significant


def test_no_variance_is_an_exact_effect():
    # Neither arm had an error: the difference is exactly 0, non-inferior at any margin.
    none = stats.sequential(0.0, 0.0, n=100, planned_n=1000)
    assert none == Sequential(1.0, 0.0, 0.0, False)
    assert stats.non_inferior(none, 0.001, higher_is_better=False) == "non-inferior"
    exact = stats.sequential(0.3, 0.0, n=100, planned_n=1000)
    assert exact == Sequential(0.0, 0.3, 0.3, True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"se": -1.0},
        {"se": math.nan},
        {"n": -1},
        {"planned_n": 0},
        {"alpha": 1.0},
        {"previous_pvalue": 1.5},
        {"effect": math.inf},
    ],
)
def test_sequential_rejects_meaningless_inputs(kwargs):
    arguments = {"effect": 0.1, "se": 0.1, "n": 10, "planned_n": 100} | kwargs
    with pytest.raises(ValueError):
        stats.sequential(**arguments)


EXPERIMENTS, LOOKS, USERS_PER_LOOK = 2000, 20, 100  # users per arm added at each look


def simulate_looks(true_effect: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference in means of unit-variance outcomes, per experiment and look: estimates,
    their known variance 2/n, and the users per arm so far."""
    rng = np.random.default_rng(seed)
    shape = (EXPERIMENTS, LOOKS)
    sums_control = rng.normal(0, math.sqrt(USERS_PER_LOOK), shape).cumsum(axis=1)
    sums_treatment = rng.normal(
        USERS_PER_LOOK * true_effect, math.sqrt(USERS_PER_LOOK), shape
    ).cumsum(axis=1)
    n = USERS_PER_LOOK * np.arange(1, LOOKS + 1)
    return (sums_treatment - sums_control) / n, np.broadcast_to(2.0 / n, shape), n


def always_valid_pvalues(estimates, variances, n, alpha):
    tau2 = stats.mixing_variance(variances[0, -1], n=n[-1], planned_n=n[-1], alpha=alpha)
    inverse = 1 / stats.mixture_likelihood_ratio(estimates, variances, tau2)
    return np.minimum.accumulate(np.minimum(inverse, 1.0), axis=1)


def test_peeking_inflates_a_naive_test_but_not_the_always_valid_one():
    alpha = 0.05
    estimates, variances, n = simulate_looks(0.0, seed=11)
    pvalues = always_valid_pvalues(estimates, variances, n, alpha)
    sequential_rate = (pvalues[:, -1] < alpha).mean()
    naive = np.abs(estimates) / np.sqrt(variances) > scipy.stats.norm.isf(alpha / 2)
    naive_rate = naive.any(axis=1).mean()
    simulation_error = math.sqrt(alpha * (1 - alpha) / EXPERIMENTS)
    # seen: always-valid ~0.01, naive z-test at every one of 20 looks ~0.26, at the last ~0.05
    assert sequential_rate <= alpha + 3 * simulation_error
    assert naive_rate > 3 * alpha
    assert naive[:, -1].mean() == pytest.approx(alpha, abs=4 * simulation_error)

    # the vectorised computation is what `sequential` does look by look
    for experiment in range(5):
        pvalue = 1.0
        for look in range(LOOKS):
            se = math.sqrt(variances[experiment, look])
            pvalue = stats.sequential(
                estimates[experiment, look], se, n=n[look], planned_n=n[-1], previous_pvalue=pvalue
            ).pvalue
            assert pvalue == pytest.approx(pvalues[experiment, look], rel=1e-9)


@pytest.mark.parametrize("true_effect", [0.15, -0.15])
def test_a_true_effect_is_found_with_the_right_sign(true_effect):
    alpha = 0.05
    estimates, variances, n = simulate_looks(true_effect, seed=12)
    pvalues = always_valid_pvalues(estimates, variances, n, alpha)
    rejected = pvalues[:, -1] < alpha
    assert rejected.mean() > 0.9  # ~4.7 SE at the planned sample; the CS is ~3 SE wide there
    first = np.argmax(pvalues < alpha, axis=1)[rejected]
    signs = np.sign(estimates[rejected, first])
    assert (signs == np.sign(true_effect)).all()
    # and the CS at that look excludes 0 on that side
    tau2 = stats.mixing_variance(variances[0, -1], n=n[-1], planned_n=n[-1], alpha=alpha)
    radius = stats.confidence_sequence_radius(variances[0, first], tau2, alpha)
    assert (np.abs(estimates[rejected, first]) > radius).all()


# --- non_inferior ---------------------------------------------------------------------------


def seq(lower: float, upper: float) -> Sequential:
    return Sequential(pvalue=0.5, ci_lower=lower, ci_upper=upper, significant=False)


@pytest.mark.parametrize(
    ("lower", "upper", "verdict"),
    [
        (-0.009, 0.02, "non-inferior"),
        (-0.01, 0.02, "inconclusive"),  # bound exactly at -margin
        (-0.03, 0.02, "inconclusive"),
        (-0.03, -0.001, "breached"),
        (-0.03, 0.0, "inconclusive"),  # touches 0
        (-0.005, -0.001, "breached"),  # significantly worse, though within the margin
        (0.001, 0.02, "non-inferior"),  # significantly better
        (-math.inf, math.inf, "inconclusive"),
    ],
)
def test_guardrail_verdicts_at_their_boundaries_both_directions(lower, upper, verdict):
    margin = 0.01
    assert stats.non_inferior(seq(lower, upper), margin, higher_is_better=True) == verdict
    # the same situation for a lower-is-better metric (error rate): the CS mirrored
    mirrored = seq(-upper, -lower)
    assert stats.non_inferior(mirrored, margin, higher_is_better=False) == verdict


def test_guardrail_margin_must_be_a_non_negative_number():
    with pytest.raises(ValueError, match="margin"):
        stats.non_inferior(seq(-1, 1), -0.01, higher_is_better=True)
    assert stats.non_inferior(seq(0.001, 0.02), 0.0, higher_is_better=True) == "non-inferior"


def test_an_arm_of_one_user_is_not_enough_data():
    frame = pd.DataFrame({"arm": ["control", "control", "treatment"], "likes": [1.0, 2.0, 3.0],
                          "answered": [4.0, 5.0, 6.0]})  # fmt: skip
    with pytest.raises(ValueError, match="'treatment' has one user"):
        stats.ratio_effect(frame, "likes", "answered")


def test_srm_is_exact_for_a_small_arm():
    # A 1 % arm with 3 of 50 users: chi-square says p = 0.0004, far off with 0.5 users
    # expected there (the exact binomial tail is 0.014); the Bayes factor is exact: no alarm.
    early = stats.srm({"control": 47, "candidate": 3}, {"control": 99, "candidate": 1})
    assert early.pvalue < 0.001 and early.sequential_pvalue > 0.1 and not early.mismatch
    # With 500 users a clear imbalance is flagged.
    later = stats.srm({"control": 470, "candidate": 30}, {"control": 99, "candidate": 1})
    assert later.sequential_pvalue < 1e-9 and later.mismatch


# --- a report's looks -------------------------------------------------------------------------


def test_looks_keep_the_lowest_p_and_the_narrowest_sequence_seen_so_far():
    from swiperec.experiments.analysis import as_seen

    def look(p, ci, guardrail_ci):
        row = {"metric": "like_rate", "status": "ok", "higher_is_better": True,
               "sequential_alpha": 0.05, "sequential_pvalue": p, "sequential_ci": ci,
               "significant": p < 0.05}  # fmt: skip
        guard = {**row, "sequential_alpha": 0.01, "sequential_ci": guardrail_ci,
                 "margin": 0.02, "verdict": "inconclusive"}  # fmt: skip
        low = {"metric": "like_rate", "status": "not enough data"}
        return {"comparisons": {"treatment": {
            "primary": dict(row), "guardrails": [guard], "segments": {"new": low}}}}  # fmt: skip

    looks = as_seen(
        [
            look(0.30, [-0.10, 0.20], [-0.05, 0.20]),
            look(0.01, [0.01, 0.12], [-0.03, 0.10]),  # significant here
            look(0.20, [-0.02, 0.15], [-0.01, 0.08]),  # the plug-in estimate wanders back
            look(0.50, [0.13, 0.30], [-0.015, 0.09]),  # disjoint from the running CI: kept
        ]
    )
    primary = [lk["comparisons"]["treatment"]["primary"] for lk in looks]
    assert [r["sequential_pvalue"] for r in primary] == [0.30, 0.01, 0.01, 0.01]
    assert [r["significant"] for r in primary] == [False, True, True, True]
    assert primary[2]["sequential_ci"] == [0.01, 0.12]
    assert primary[3]["sequential_ci"] == [0.13, 0.30] and primary[3]["sequence_reset"]
    assert "sequence_reset" not in primary[2]
    guard = [lk["comparisons"]["treatment"]["guardrails"][0] for lk in looks]
    # [-0.03, 0.10] then [-0.01, 0.08]: its lower bound within the 0.02 margin from look 3 on
    assert [g["verdict"] for g in guard] == ["inconclusive", "inconclusive", "non-inferior",
                                             "non-inferior"]  # fmt: skip
    assert guard[3]["sequential_ci"] == [-0.01, 0.08]
    assert looks[0]["comparisons"]["treatment"]["segments"]["new"]["status"] == "not enough data"
