"""How review ratings map onto real users' like/nope, where the same videos have both.

    result = calibrate(conn, until=val_start)   # JSON-ready dict
    print(render_text(result))
    FeatureConfig(**result["feature_config"])  # like_rating, nope_rating, pseudo_user_weight

The aggregation runs in PostgreSQL (calibrate.sql); this module turns its sums into estimates
and choices. A real user's swipe is their latest on the video before `until`; a pair is a
(review, swipe) on the same video.

Per rating level k, over videos v: n_v reviews of level k, m_v swipes, l_v likes. The level's
like-rate is the ratio estimator R = sum(y_v) / sum(x_v) with y_v = n_v l_v, x_v = n_v m_v (every
pair counts, so a video weighs by its reviews and its swipes); its standard error is the
cluster-robust (linearisation, delta-method) one with the video as cluster,
SE^2 = G / (G - 1) * sum((y_v - R x_v)^2) / (sum x_v)^2 over the G videos with swipes, and the
95 % interval is R +- t(0.975, G - 1) SE, clipped to [0, 1]. The base rate is the same over all
reviews (every reviewed video, weighted by its reviews).

Thresholds: a level reads `like` when its interval lies entirely above the base rate, `nope`
when entirely below, else `neither` (or `no data`). FeatureConfig needs one cut each side:
like_rating is the lowest like level with no nope level above it, nope_rating the highest nope
level with no like level below it. Ratings are ordered, so a level above like_rating that reads
neither still counts as like (and below nope_rating as nope); a like or nope level between the
two cuts is dropped; every such case is named in `reasons`. A side with no such level keeps the
current default when that stays valid (1 <= nope < like <= 5), else the nearest valid value.
With fewer than `min_pairs` pairs nothing is chosen: the current defaults stay.

Weight (a heuristic): the AUC of one pseudo-label (with the chosen thresholds) as a predictor of
a real user's swipe on the same video, against the AUC of another real user's swipe there, the
same targets each weighing 1 (calibrate.sql); weight = (AUC_pseudo - 0.5) / (AUC_real - 0.5)
clipped to [0, 1]. For a 0/1 label 2 AUC - 1 is Youden's J = 1 - rho_+ - rho_-, the factor by
which class-conditional label noise shrinks a label's expected signal (Natarajan et al.,
"Learning with Noisy Labels", NeurIPS 2013), so the ratio is the signal one pseudo-label carries
per unit of the signal one real label carries about a real user's swipe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib import resources

from scipy import stats

from swiperec.features.config import FeatureConfig

RATINGS = (1, 2, 3, 4, 5)
MIN_PAIRS = 300
CONFIDENCE = 0.95


@cache
def _queries() -> dict[str, str]:
    text = resources.files("swiperec.migration").joinpath("calibrate.sql").read_text()
    parts = text.split("-- query: ")[1:]
    return {part.split("\n", 1)[0].strip(): part.split("\n", 1)[1] for part in parts}


def _fetch(conn, name: str, params: dict) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(_queries()[name], params)
        columns = [c.name for c in cur.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    conn.rollback()
    return rows


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ratio_estimate(row: dict, confidence: float = CONFIDENCE) -> dict:
    """Like-rate, cluster-robust SE and interval from one row of the `levels` query."""
    pairs, likes, clusters = int(row["pairs"]), int(row["likes"]), int(row["clusters"])
    if pairs == 0:
        return {"like_rate": None, "se": None, "ci": None}
    rate = likes / pairs
    if clusters < 2:
        return {"like_rate": rate, "se": None, "ci": None}
    # sum((y - R x)^2) with R = Y / X, times X^2: exact in integers, no cancellation.
    sxx, sxy, syy = int(row["sxx"]), int(row["sxy"]), int(row["syy"])
    scaled = syy * pairs * pairs - 2 * likes * sxy * pairs + likes * likes * sxx
    se = (clusters / (clusters - 1) * max(scaled, 0) / pairs**4) ** 0.5
    half = stats.t.ppf(0.5 + confidence / 2, clusters - 1) * se
    return {"like_rate": rate, "se": se, "ci": [max(rate - half, 0.0), min(rate + half, 1.0)]}


def _verdict(estimate: dict, base: float | None) -> str:
    if estimate["like_rate"] is None or base is None:
        return "no data"
    if estimate["ci"] is None:
        return "neither"
    low, high = estimate["ci"]
    return "like" if low > base else "nope" if high < base else "neither"


def choose_thresholds(verdicts: dict[int, str], default: FeatureConfig) -> tuple[int, int, list]:
    """(like_rating, nope_rating, reasons) from the per-level verdicts (see the module doc)."""
    reasons = []
    likes = [k for k in RATINGS if verdicts[k] == "like"]
    nopes = [k for k in RATINGS if verdicts[k] == "nope"]
    like = min((k for k in likes if not any(j > k for j in nopes)), default=None)
    nope = max((k for k in nopes if not any(j < k for j in likes)), default=None)
    if like is None and nope is None:
        reasons.append(
            "no level reads like or nope significantly: keeping the defaults "
            f"like_rating {default.like_rating}, nope_rating {default.nope_rating}"
        )
        return default.like_rating, default.nope_rating, reasons
    # FeatureConfig needs 1 <= nope_rating < like_rating <= 5: a nope at 5 or a like at 1 (a
    # reversed scale) cannot be followed; the nearest valid cut is taken.
    if nope is not None and nope > 4:
        nope = 4
        reasons.append("rating 5 reads nope: nope_rating 4, the highest a like cut allows")
    if like is not None and like < 2:
        like = 2
        reasons.append("rating 1 reads like: like_rating 2, the lowest a nope cut allows")
    if like is None:
        like = max(default.like_rating, nope + 1)
        reasons.append(
            f"no level reads like (above every nope level): like_rating {like} "
            f"(the default {default.like_rating}, or just above nope_rating)"
        )
    if nope is None:
        nope = min(default.nope_rating, like - 1)
        reasons.append(
            f"no level reads nope (below every like level): nope_rating {nope} "
            f"(the default {default.nope_rating}, or just below like_rating)"
        )
    for k in RATINGS:
        reading = _reading(k, like, nope)
        if verdicts[k] in ("like", "nope") and verdicts[k] != reading:
            reasons.append(
                f"rating {k} reads {verdicts[k]} but is {reading} with the chosen cuts "
                "(ratings out of order: a single cut each side cannot follow it)"
            )
        elif verdicts[k] in ("neither", "no data") and reading != "dropped":
            reasons.append(
                f"rating {k} reads {verdicts[k]} but counts as {reading}: ratings are ordered "
                f"and it lies {'above like_rating' if reading == 'like' else 'below nope_rating'}"
            )
    return like, nope, reasons


def _reading(rating: int, like_rating: int, nope_rating: int) -> str:
    return "like" if rating >= like_rating else "nope" if rating <= nope_rating else "dropped"


def _level_agreement(like_rate: float | None, reading: str) -> float | None:
    """Share of a level's pairs whose swipe agrees with its reading (None when dropped)."""
    if like_rate is None or reading == "dropped":
        return None
    return like_rate if reading == "like" else 1 - like_rate


def _agreement(levels: list[dict], like_rating: int, nope_rating: int) -> dict:
    """Share of pairs on decisive levels whose swipe agrees with the level's reading, and the
    share of all pairs that are on decisive levels (coverage)."""
    agree = decisive = total = 0
    for level in levels:
        total += level["pairs"]
        reading = _reading(level["rating"], like_rating, nope_rating)
        if reading == "dropped" or not level["pairs"]:
            continue
        decisive += level["pairs"]
        agree += level["likes"] if reading == "like" else level["pairs"] - level["likes"]
    return {
        "like_rating": like_rating,
        "nope_rating": nope_rating,
        "agreement": agree / decisive if decisive else None,
        "coverage": decisive / total if total else None,
        "pairs": decisive,
    }


def _weight(conn, until, like_rating: int, nope_rating: int) -> dict:
    [row] = _fetch(
        conn, "weight", {"until": until, "like_rating": like_rating, "nope_rating": nope_rating}
    )
    auc_pseudo = None if row["auc_pseudo"] is None else float(row["auc_pseudo"])
    auc_real = None if row["auc_real"] is None else float(row["auc_real"])
    weight = None
    if auc_pseudo is not None and auc_real is not None and auc_real > 0.5:
        weight = min(max((auc_pseudo - 0.5) / (auc_real - 0.5), 0.0), 1.0)
    return {
        "like_rating": like_rating,
        "nope_rating": nope_rating,
        "auc_pseudo": auc_pseudo,
        "auc_real": auc_real,
        "weight": weight,
        "videos": int(row["videos"]),
        "targets": int(row["targets"]),
    }


def calibrate(
    conn,
    *,
    until: datetime | None = None,
    min_pairs: int = MIN_PAIRS,
    confidence: float = CONFIDENCE,
) -> dict:
    """The calibration of review ratings against real swipes (before `until`, when given);
    a JSON-ready dict. See the module doc for the method."""
    until = _as_utc(until)
    default = FeatureConfig()
    rows = _fetch(conn, "levels", {"until": until})
    by_rating = {row["rating"]: row for row in rows}
    empty = {"reviews": 0, "videos": 0, "clusters": 0, "swipes": 0, "pairs": 0, "likes": 0}
    base_row = by_rating.get(None, empty)
    base = {
        "reviews": int(base_row["reviews"]),
        "videos": int(base_row["videos"]),
        "overlap_videos": int(base_row["clusters"]),
        "swipes": int(base_row["swipes"]),
        "pairs": int(base_row["pairs"]),
        "likes": int(base_row["likes"]),
        **ratio_estimate(base_row, confidence),
    }
    levels = []
    for k in RATINGS:
        row = by_rating.get(k, empty)
        estimate = ratio_estimate(row, confidence)
        levels.append(
            {
                "rating": k,
                "reviews": int(row["reviews"]),
                "videos": int(row["videos"]),
                "overlap_videos": int(row["clusters"]),
                "swipes": int(row["swipes"]),
                "pairs": int(row["pairs"]),
                "likes": int(row["likes"]),
                **estimate,
                "verdict": _verdict(estimate, base["like_rate"]),
            }
        )

    reasons = []
    if base["pairs"] < min_pairs:
        like_rating, nope_rating = default.like_rating, default.nope_rating
        source = "default"
        reasons.append(
            f"too little overlap: {base['pairs']} (review, swipe) pairs on "
            f"{base['overlap_videos']} videos, fewer than min_pairs={min_pairs}: keeping the "
            f"defaults like_rating {like_rating}, nope_rating {nope_rating}, "
            f"pseudo_user_weight {default.pseudo_user_weight:g}"
        )
    else:
        verdicts = {level["rating"]: level["verdict"] for level in levels}
        like_rating, nope_rating, more = choose_thresholds(verdicts, default)
        source = "data"  # the weight's; the cuts are the defaults when no level is decisive
        reasons.extend(more)
    decisive = source == "data" and any(level["verdict"] in ("like", "nope") for level in levels)

    naive = {"like_rating": default.like_rating, "nope_rating": default.nope_rating}
    for level in levels:
        k = level["rating"]
        level["reading"] = {
            "chosen": _reading(k, like_rating, nope_rating),
            "naive": _reading(k, naive["like_rating"], naive["nope_rating"]),
        }
        level["agreement"] = {
            name: _level_agreement(level["like_rate"], reading)
            for name, reading in level["reading"].items()
        }

    chosen_weight = _weight(conn, until, like_rating, nope_rating)
    naive_weight = _weight(conn, until, naive["like_rating"], naive["nope_rating"])
    pseudo_user_weight = default.pseudo_user_weight
    if source == "data":
        if chosen_weight["weight"] is None:
            reasons.append(
                "the weight cannot be read from the data (AUC_real "
                f"{_fmt(chosen_weight['auc_real'])}, AUC_pseudo "
                f"{_fmt(chosen_weight['auc_pseudo'])}: needs both, AUC_real above 0.5): "
                f"keeping pseudo_user_weight {pseudo_user_weight:g}"
            )
        else:
            pseudo_user_weight = chosen_weight["weight"]
    feature_config = {
        "like_rating": like_rating,
        "nope_rating": nope_rating,
        "pseudo_user_weight": pseudo_user_weight,
    }
    FeatureConfig(**feature_config)  # the choice is always a valid config
    return {
        "until": until.isoformat() if until else None,
        "min_pairs": min_pairs,
        "confidence": confidence,
        "base": base,
        "levels": levels,
        "thresholds": {
            "like_rating": like_rating,
            "nope_rating": nope_rating,
            "source": "data" if decisive else "default",
        },
        "agreement": {
            "chosen": _agreement(levels, like_rating, nope_rating),
            "naive": _agreement(levels, naive["like_rating"], naive["nope_rating"]),
        },
        "weight": {
            "pseudo_user_weight": pseudo_user_weight,
            "source": source if chosen_weight["weight"] is not None else "default",
            "chosen": chosen_weight,
            "naive": naive_weight,
            "rule": "(AUC_pseudo - 0.5) / (AUC_real - 0.5) clipped to [0, 1]: one pseudo-label "
            "vs another real user's swipe as predictors of a real user's swipe on the video "
            "(a heuristic)",
        },
        "feature_config": feature_config,
        "reasons": reasons,
    }


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def render_text(result: dict) -> str:
    """A compact table, one row per rating level, then the choices and the reasons."""
    base = result["base"]
    window = f"before {result['until']}" if result["until"] else "all data"
    pct = round(result["confidence"] * 100)
    lines = [
        f"calibration of review ratings against real users' swipes ({window})",
        f"overlap: {base['pairs']} (review, swipe) pairs on {base['overlap_videos']} videos; "
        f"{base['reviews']} reviews of {base['videos']} videos, {base['swipes']} swipes on them",
        f"base like-rate on reviewed videos: {_fmt(base['like_rate'])} "
        f"[{_fmt((base['ci'] or [None])[0])}, {_fmt((base['ci'] or [None, None])[1])}]",
        "",
        f"{'rating':>6} {'reviews':>8} {'videos':>7} {'swipes':>7} {'pairs':>7} "
        f"{'like-rate':>9} {f'{pct} % CI':>15}  {'verdict':<8}{'naive':<8}{'chosen':<8}"
        f"{'agree naive':>11} {'agree chosen':>12}",
    ]
    for level in result["levels"]:
        ci = level["ci"]
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        lines.append(
            f"{level['rating']:>6} {level['reviews']:>8} {level['videos']:>7} "
            f"{level['swipes']:>7} {level['pairs']:>7} {_fmt(level['like_rate']):>9} "
            f"{interval:>15}  {level['verdict']:<8}{level['reading']['naive']:<8}"
            f"{level['reading']['chosen']:<8}{_fmt(level['agreement']['naive']):>11} "
            f"{_fmt(level['agreement']['chosen']):>12}"
        )
    lines.append("")
    for name in ("naive", "chosen"):
        a, w = result["agreement"][name], result["weight"][name]
        lines.append(
            f"{name:<6} like_rating {a['like_rating']}, nope_rating {a['nope_rating']}: "
            f"agreement {_fmt(a['agreement'])} on {_fmt(a['coverage'], '.0%')} of pairs; "
            f"AUC pseudo {_fmt(w['auc_pseudo'])} vs real {_fmt(w['auc_real'])} "
            f"-> weight {_fmt(w['weight'])}"
        )
    config = result["feature_config"]
    lines.append(
        f"chosen ({result['thresholds']['source']}): like_rating {config['like_rating']}, "
        f"nope_rating {config['nope_rating']}, pseudo_user_weight "
        f"{config['pseudo_user_weight']:.3f} ({result['weight']['source']})"
    )
    if result["reasons"]:
        lines.append("reasons:")
        lines.extend(f"  - {reason}" for reason in result["reasons"])
    return "\n".join(lines)
