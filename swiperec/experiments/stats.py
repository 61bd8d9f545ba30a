"""Statistics for A/B tests between model versions: plain numbers in, typed results out.

The randomisation unit is the user, so every input frame has one row per user: the column `arm`
and per-user sums (`likes`, `served`, `errors`, `requests`, ...), plus optional pre-experiment
covariates (`likes_pre`, `served_pre`; 0 for users without history).

- `srm`: is the split of users between arms the one that was configured? A sample ratio
  mismatch (SRM) means the assignment or the logging is broken and no effect can be trusted.
  Pearson's chi-square goodness-of-fit test (Fabijan et al., KDD 2019).
- `ratio_effect`: a ratio-of-sums metric per arm (like-rate = sum likes / sum served) and the
  treatment-minus-control difference with a fixed-horizon two-sided CI and p-value. The users'
  likes and served counts are correlated, so the variance is the delta method's (Deng, Knoblich,
  Lu, KDD 2018), optionally reduced with pre-experiment data by CUPED (Deng, Xu, Kohavi, Walker,
  WSDM 2013). The computation is tea-tasting's `RatioOfMeans`.
- `sequential`: always-valid p-value and confidence sequence for an estimate watched at every
  look (mSPRT; Johari et al., KDD 2017), so peeking does not inflate the error rate.
- `non_inferior`: a guardrail verdict from a confidence sequence (Schultzberg et al., 2024).

Effects are always treatment minus control, in the metric's units (a like-rate difference of
0.01 is one percentage point).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.stats
import tea_tasting
from numpy.typing import ArrayLike
from tea_tasting.metrics.mean import MeanResult

ARM = "arm"
GuardrailVerdict = Literal["non-inferior", "breached", "inconclusive"]


# --- sample ratio mismatch ------------------------------------------------------------------


SRM_PRIOR_CONCENTRATION = 100.0  # the Dirichlet prior's total weight, centred on the shares


@dataclass(frozen=True)
class SrmResult:
    counts: dict[str, int]  # users per arm, in the order of `expected_shares`
    expected_shares: dict[str, float]  # configured shares, normalised to sum to 1
    chi2: float
    pvalue: float  # chi-square, fixed horizon: valid for one look
    sequential_pvalue: float  # always-valid: valid however often one looks
    mismatch: bool  # sequential_pvalue < threshold


def srm(
    counts: Mapping[str, int],
    expected: Mapping[str, float],
    threshold: float = 0.001,
    *,
    concentration: float = SRM_PRIOR_CONCENTRATION,
) -> SrmResult:
    """Test whether the users per arm match the configured shares.

    `expected` holds each arm's configured share in any unit (0.45/0.45/0.10 or 45/45/10); the
    shares are normalised. An arm in `expected` but absent from `counts` has 0 users (the
    strongest mismatch there is); an arm in `counts` but not in `expected` is a ValueError.
    With no users at all there is no evidence yet: p-values 1, no mismatch.

    Two tests of the same counts:
    - chi-square goodness of fit (`pvalue`), the usual SRM check (Fabijan, Gupchup, Gupta,
      Omhover, Qin, Vermeer, Dmitriev, "Diagnosing Sample Ratio Mismatch in Online Controlled
      Experiments: A Taxonomy and Rules of Thumb for Practitioners", KDD 2019), valid for one
      look;
    - the sequential multinomial test (`sequential_pvalue`, which decides `mismatch`): the
      Bayes factor of a Dirichlet-multinomial alternative against the configured shares,
      BF = [B(alpha + x) / B(alpha)] / prod(p_i ** x_i) with alpha = concentration * p, and
      p-value min(1, 1 / BF) (Lindon, Malek, "Anytime-Valid Inference For Multinomial Count
      Data", NeurIPS 2022). 1 / BF is an e-process: its chance of ever falling below the
      threshold, however often one looks, is at most the threshold. The SRM check runs at
      every look of every experiment (the rollout controller's, every minute), so a
      fixed-horizon test would raise false alarms, and an SRM rolls a rollout back. It is exact
      for any count (no large-sample approximation). `concentration` sets where its power is:
      larger finds smaller imbalances in large samples, smaller finds large ones sooner.

    The threshold is strict (0.001 is a common choice): a flagged SRM discards the experiment,
    while real SRMs (broken assignment, bots, lost logs) give p-values far below it once there
    are a few hundred users.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    unknown = sorted(set(counts) - set(expected))
    if unknown:
        raise ValueError(f"arms with users but no expected share: {', '.join(unknown)}")
    if len(expected) < 2:
        raise ValueError(f"an SRM test needs at least two arms, got {sorted(expected)}")
    bad_shares = sorted(arm for arm, share in expected.items() if not share > 0)
    if bad_shares:
        raise ValueError(f"expected shares must be positive: {', '.join(bad_shares)}")
    observed = {arm: int(counts.get(arm, 0)) for arm in expected}
    negative = sorted(arm for arm, count in observed.items() if count < 0)
    if negative:
        raise ValueError(f"negative user counts for: {', '.join(negative)}")

    total_share = math.fsum(expected.values())
    shares = {arm: share / total_share for arm, share in expected.items()}
    n_users = sum(observed.values())
    if n_users == 0:
        return SrmResult(observed, shares, chi2=0.0, pvalue=1.0, sequential_pvalue=1.0,
                         mismatch=False)  # fmt: skip
    expected_counts = [n_users * share for share in shares.values()]
    test = scipy.stats.chisquare(f_obs=list(observed.values()), f_exp=expected_counts)
    x = np.array(list(observed.values()), dtype=float)
    p = np.array(list(shares.values()))
    sequential = math.exp(-max(srm_log_bayes_factor(x, p, concentration), 0.0))
    return SrmResult(observed, shares, float(test.statistic), float(test.pvalue), sequential,
                     sequential < threshold)  # fmt: skip


def srm_log_bayes_factor(counts: ArrayLike, shares: ArrayLike, concentration: float) -> float:
    """log BF of Dirichlet(concentration * shares)-multinomial against multinomial(shares)."""
    from scipy.special import gammaln, xlogy

    x, p = np.asarray(counts, dtype=float), np.asarray(shares, dtype=float)
    alpha = concentration * p

    def log_beta(a):
        return float(gammaln(a).sum() - gammaln(a.sum()))

    return log_beta(alpha + x) - log_beta(alpha) - float(xlogy(x, p).sum())


# --- fixed-horizon effect of a ratio metric -------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """Treatment minus control for one ratio-of-sums metric, fixed horizon, two-sided.

    `control` / `treatment` are the plain ratios of sums per arm (tea-tasting's names). With
    covariates, `effect`, its CI and the relative effect are CUPED-adjusted, so `effect` then
    differs slightly from `treatment - control` (the adjustment removes the part of the
    difference explained by the arms' pre-period difference). `rel_effect` is
    treatment / control - 1 (inf or nan when control's value is 0).
    """

    numer: str
    denom: str
    control_arm: str
    treatment_arm: str
    n_control: int  # users
    n_treatment: int
    control: float  # sum(numer) / sum(denom) in the control arm
    treatment: float
    effect: float
    se: float
    ci_lower: float
    ci_upper: float
    pvalue: float
    rel_effect: float
    rel_ci_lower: float
    rel_ci_upper: float
    alpha: float
    # 1 - (SE with covariate / SE without)^2; None when no covariate was given
    variance_reduction: float | None


def ratio_effect(
    frame: pd.DataFrame,
    numer: str,
    denom: str,
    *,
    control: str = "control",
    treatment: str = "treatment",
    numer_pre: str | None = None,
    denom_pre: str | None = None,
    alpha: float = 0.05,
) -> Effect:
    """Difference in sum(numer)/sum(denom) between two arms, by the delta method (+ CUPED).

    `frame`: one row per user with `arm`, `numer`, `denom` (and the covariates). Rows of other
    arms (a holdout) are ignored. `numer_pre`/`denom_pre`: the same ratio in the pre-period as
    the CUPED covariate (`numer_pre` alone: the per-user mean of that column). Users without
    history have 0 in both and simply contribute nothing to the covariate's sums.

    Normal approximation with unequal variances (Welch-type, `use_t=False`, `equal_var=False`):
    Deng, Knoblich, Lu, "Applying the Delta Method in Metric Analytics: A Practical Guide with
    Novel Ideas", KDD 2018; Deng, Xu, Kohavi, Walker, "Improving the Sensitivity of Online
    Controlled Experiments by Utilizing Pre-Experiment Data", WSDM 2013. tea-tasting does not
    report the standard error; it is the CI half-width divided by z_{1-alpha/2}, exact up to
    rounding because the CI is effect +- z * SE.

    Raises ValueError when an arm has no users or a zero sum of `denom` (or `denom_pre`),
    naming the arm and the column: the caller reports "not enough data".
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if control == treatment:
        raise ValueError(f"control and treatment are the same arm: {control!r}")
    if denom_pre is not None and numer_pre is None:
        raise ValueError("denom_pre needs numer_pre: the covariate is numer_pre / denom_pre")
    columns = [c for c in (numer, denom, numer_pre, denom_pre) if c is not None]
    denominators = [c for c in (denom, denom_pre) if c is not None]
    arms = _two_arms(frame, columns, denominators, control, treatment)

    metrics = {"plain": _ratio_metric(numer, denom, None, None, alpha)}
    if numer_pre is not None:
        metrics["cuped"] = _ratio_metric(numer, denom, numer_pre, denom_pre, alpha)
    experiment = tea_tasting.Experiment(metrics, variant=ARM)
    # zero-variance metrics (no errors in either arm) make scipy warn on a zero scale;
    # `_standard_error` handles them
    with np.errstate(divide="ignore", invalid="ignore"):
        results = experiment.analyze(arms, control=control)

    z = float(scipy.stats.norm.isf(alpha / 2))
    plain_result = results["plain"]
    adjusted = results.get("cuped", plain_result)
    se = _standard_error(adjusted, z)
    variance_reduction = None
    if "cuped" in results:
        plain_se = _standard_error(plain_result, z)
        variance_reduction = 1 - (se / plain_se) ** 2 if plain_se > 0 else 0.0
    effect = float(adjusted.effect_size)
    if se > 0:
        ci_lower = float(adjusted.effect_size_ci_lower)
        ci_upper = float(adjusted.effect_size_ci_upper)
        pvalue = float(adjusted.pvalue)
    else:  # every user has the same ratio within each arm: the difference is known exactly
        ci_lower = ci_upper = effect
        pvalue = 1.0 if effect == 0 else 0.0

    sizes = arms[ARM].value_counts()
    return Effect(
        numer=numer,
        denom=denom,
        control_arm=control,
        treatment_arm=treatment,
        n_control=int(sizes[control]),
        n_treatment=int(sizes[treatment]),
        control=float(plain_result.control),
        treatment=float(plain_result.treatment),
        effect=effect,
        se=se,
        ci_lower=ci_lower,
        ci_upper=ci_upper,
        pvalue=pvalue,
        rel_effect=float(adjusted.rel_effect_size),
        rel_ci_lower=float(adjusted.rel_effect_size_ci_lower),
        rel_ci_upper=float(adjusted.rel_effect_size_ci_upper),
        alpha=alpha,
        variance_reduction=variance_reduction,
    )


def _two_arms(
    frame: pd.DataFrame, columns: list[str], denominators: list[str], control: str, treatment: str
) -> pd.DataFrame:
    """The control and treatment rows, after checking there is something to divide by."""
    missing = [c for c in (ARM, *columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns: {', '.join(missing)}")
    arms = frame.loc[frame[ARM].isin([control, treatment]), [ARM, *columns]]
    with_nan = [c for c in columns if arms[c].isna().any()]
    if with_nan:
        raise ValueError(f"missing values (NaN) in: {', '.join(with_nan)}")
    sums = arms.groupby(ARM)[columns].sum()
    users = arms[ARM].value_counts()
    for arm in (control, treatment):
        if arm not in sums.index:
            raise ValueError(f"arm {arm!r} has no users")
        if users[arm] < 2:
            raise ValueError(f"arm {arm!r} has one user: a variance needs two")
        for column in denominators:
            if sums.loc[arm, column] == 0:
                raise ValueError(f"arm {arm!r} has a zero sum of {column!r}: nothing to divide by")
    return arms


def _ratio_metric(
    numer: str, denom: str, numer_pre: str | None, denom_pre: str | None, alpha: float
) -> tea_tasting.RatioOfMeans:
    return tea_tasting.RatioOfMeans(
        numer,
        denom,
        numer_pre,
        denom_pre,
        alternative="two-sided",
        confidence_level=1 - alpha,
        use_t=False,
        equal_var=False,
    )


def _standard_error(result: MeanResult, z: float) -> float:
    """SE of the effect from tea-tasting's CI; 0 when it is undefined for zero variance."""
    se = (result.effect_size_ci_upper - result.effect_size_ci_lower) / (2 * z)
    return float(se) if math.isfinite(se) else 0.0


# --- always-valid inference (mSPRT) ---------------------------------------------------------


@dataclass(frozen=True)
class Sequential:
    pvalue: float  # always-valid: running minimum over looks of 1/Lambda, capped at 1
    ci_lower: float  # the confidence sequence at this look
    ci_upper: float
    significant: bool  # pvalue < alpha


def mixing_variance(variance: float, *, n: int, planned_n: int, alpha: float) -> float:
    """tau^2 of the N(0, tau^2) mixture that makes the confidence sequence tightest at planned_n.

    V* = variance * n / planned_n is the estimate's variance at the planned sample (variance
    ~ 1/n), and tau^2 = V* (-2 log alpha + log(1 - 2 log alpha)): the approximate minimiser of
    the boundary's width at V* (Waudby-Smith, Arbour, Sinha, Kennedy, Ramdas, "Time-uniform
    central limit theory and asymptotic confidence sequences", Ann. Statist. 2024, their rho).
    """
    planned_variance = variance * n / planned_n
    return planned_variance * (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha)))


def mixture_likelihood_ratio(
    effect: ArrayLike, variance: ArrayLike, mixing_variance: ArrayLike
) -> np.ndarray:
    """Lambda: the normal likelihood ratio of effect theta vs 0, averaged over theta ~ N(0, tau^2).

    Lambda = sqrt(V / (V + tau^2)) exp(tau^2 effect^2 / (2 V (V + tau^2))) for an estimate
    effect ~ N(theta, V). Vectorised over numpy arrays.
    """
    return np.exp(_log_mixture_likelihood_ratio(effect, variance, mixing_variance))


def confidence_sequence_radius(
    variance: ArrayLike, mixing_variance: ArrayLike, alpha: float
) -> np.ndarray:
    """Half-width of the confidence sequence: the theta with 1/Lambda(effect - theta) = alpha.

    sqrt(V (V + tau^2) / tau^2 * log((V + tau^2) / (V alpha^2))). Vectorised.
    """
    v, tau2 = np.asarray(variance, dtype=float), np.asarray(mixing_variance, dtype=float)
    return np.sqrt(v * (v + tau2) / tau2 * (np.log1p(tau2 / v) - 2 * math.log(alpha)))


def sequential(
    effect: float,
    se: float,
    *,
    n: int,
    planned_n: int,
    alpha: float = 0.05,
    previous_pvalue: float = 1.0,
) -> Sequential:
    """Always-valid p-value and confidence sequence for an effect looked at repeatedly.

    Call it at every look with the current estimate (e.g. `Effect.effect`, `Effect.se`), the
    users so far `n` and the planned users `planned_n` (in the same unit, per arm or total: only
    n / planned_n is used), passing the previous look's pvalue. Stopping whenever `significant`
    is true keeps the false positive rate at most alpha, however often one looks; the CI covers
    the true effect at all looks simultaneously with probability 1 - alpha.

    Method: the normal-mixture mSPRT of Johari, Koomen, Pekelis, Walsh, "Peeking at A/B Tests:
    Why it matters, and what to do about it", KDD 2017; its confidence sequence is the two-sided
    normal-mixture boundary of Howard, Ramdas, McAuliffe, Sekhon, "Time-uniform, nonparametric,
    nonasymptotic confidence sequences", Ann. Statist. 2021 (as an asymptotic confidence
    sequence: Waudby-Smith et al., Ann. Statist. 2024). tau^2: see `mixing_variance`.

    Assumptions: users are i.i.d. within arms and the estimate is asymptotically normal with
    variance se^2 ~ 1/n; se is estimated from the data (plug-in), so the guarantee is
    asymptotic and the first looks on a few hundred users are approximate. tau^2 follows the
    current se estimate, so it drifts slightly between looks. With no users (n == 0) the
    p-value stays at previous_pvalue and the CI is infinite. With users but no variance
    (se == 0: e.g. no errors in either arm) the effect is known exactly: the CI is the point,
    and p is 0 when it is not 0.
    """
    _check_sequential_inputs(effect, se, n, planned_n, alpha, previous_pvalue)
    if n == 0:
        return Sequential(previous_pvalue, -math.inf, math.inf, previous_pvalue < alpha)
    if se == 0:
        pvalue = previous_pvalue if effect == 0 else 0.0
        return Sequential(pvalue, effect, effect, pvalue < alpha)
    variance = se * se
    tau2 = mixing_variance(variance, n=n, planned_n=planned_n, alpha=alpha)
    log_lr = float(_log_mixture_likelihood_ratio(effect, variance, tau2))
    pvalue = min(previous_pvalue, math.exp(-max(log_lr, 0.0)))
    radius = float(confidence_sequence_radius(variance, tau2, alpha))
    return Sequential(pvalue, effect - radius, effect + radius, pvalue < alpha)


def _log_mixture_likelihood_ratio(
    effect: ArrayLike, variance: ArrayLike, mixing_variance: ArrayLike
) -> np.ndarray:
    d, v = np.asarray(effect, dtype=float), np.asarray(variance, dtype=float)
    tau2 = np.asarray(mixing_variance, dtype=float)
    return 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))


def _check_sequential_inputs(
    effect: float, se: float, n: int, planned_n: int, alpha: float, previous_pvalue: float
) -> None:
    if not math.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect}")
    if not (math.isfinite(se) and se >= 0):
        raise ValueError(f"se must be finite and >= 0, got {se}")
    if n < 0 or planned_n <= 0:
        raise ValueError(f"need n >= 0 and planned_n > 0, got n={n}, planned_n={planned_n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 <= previous_pvalue <= 1:
        raise ValueError(f"previous_pvalue must be in [0, 1], got {previous_pvalue}")


# --- guardrails -----------------------------------------------------------------------------


def non_inferior(seq: Sequential, margin: float, *, higher_is_better: bool) -> GuardrailVerdict:
    """Guardrail verdict from the confidence sequence of treatment minus control.

    `margin` is absolute, in the metric's units (0.002 on an error rate = 0.2 percentage
    points); a relative margin must be converted by the caller (fraction * control's value).

    - "breached": the CS lies entirely on the bad side of 0 (significantly worse: for
      higher_is_better, ci_upper < 0). Checked first, so a significant deterioration breaches
      the guardrail even when it is within the margin.
    - "non-inferior": the CS's bad-side bound is within the margin (ci_lower > -margin for
      higher_is_better, ci_upper < margin otherwise).
    - "inconclusive": neither yet; bounds equal to the limits are inconclusive.

    Guardrails as non-inferiority tests, alongside deterioration (inferiority) tests:
    Schultzberg, Ankargren, Frånberg, "Risk-aware product decisions in A/B tests with multiple
    metrics", Spotify, 2024.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    sign = 1.0 if higher_is_better else -1.0
    # in "good direction" units: higher is better
    good_lower = min(sign * seq.ci_lower, sign * seq.ci_upper)
    good_upper = max(sign * seq.ci_lower, sign * seq.ci_upper)
    if good_upper < 0:
        return "breached"
    if good_lower > -margin:
        return "non-inferior"
    return "inconclusive"
