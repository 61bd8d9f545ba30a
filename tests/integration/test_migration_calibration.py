"""The calibration of review ratings against real swipes, on a real database with a known
mapping: videos rated 1-2 are liked by real users 10 % of the time, rated 3 70 %, rated 4-5
80 %. Each level has 8 videos, each one review and 10 swipes (one per user); like counts
alternate around the level's rate (0/2, 6/8, 7/9 of 10) so the videos differ and the
intervals have width. One rating-3 video has a second review, so the pair weighting shows.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from psycopg2.extras import execute_values

from swiperec.features.config import FeatureConfig
from swiperec.migration.calibrate import calibrate, choose_thresholds, render_text

pytestmark = pytest.mark.integration

USERS = [str(uuid.UUID(int=i + 1)) for i in range(10)]
LIKES = {1: (0, 2), 2: (0, 2), 3: (6, 8), 4: (7, 9), 5: (7, 9)}  # of 10, alternating by video
TRUTH = {1: 0.1, 2: 0.1, 3: 0.7, 4: 0.8, 5: 0.8}
VIDEOS_PER_LEVEL = 8
REVIEWED = datetime(2026, 1, 1, tzinfo=UTC)
SWIPED = datetime(2026, 1, 2, tzinfo=UTC)
LATER = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def db(conn):
    """The known mapping; returns (conn, reviews, swipes) with reviews as (reviewer, video,
    rating) and swipes as (user, video, liked), as inserted."""
    reviews, swipes = [], []
    with conn, conn.cursor() as cur:
        for k in LIKES:
            for i in range(VIDEOS_PER_LEVEL):
                cur.execute(
                    "insert into videos (external_id, title) values (%s, %s) returning id",
                    (f"v{k}-{i}", f"title {k} {i}"),
                )
                video = cur.fetchone()[0]
                reviews.append(("r-a", video, k))
                if k == 3 and i == 0:
                    reviews.append(("r-b", video, 3))
                likes = LIKES[k][i % 2]
                swipes += [(user, video, j < likes) for j, user in enumerate(USERS)]
        execute_values(
            cur,
            "insert into video_reviews (reviewer_id, video_id, rating, created_at) values %s",
            [(r, v, k, REVIEWED) for r, v, k in reviews],
        )
        execute_values(
            cur,
            "insert into user_video_decisions (user_id, video_id, decision, created_at) values %s",
            [(u, v, "like" if liked else "nope", SWIPED) for u, v, liked in swipes],
        )
    return conn, reviews, swipes


def brute_force_aucs(reviews, swipes, like_rating: int, nope_rating: int) -> tuple:
    """AUC_pseudo and AUC_real by enumeration: every target swipe weighs 1, split over the
    video's decisive reviews (pseudo) or over the other users' swipes on it (real)."""
    cells = {"pseudo": {}, "real": {}}
    for user, video, liked in swipes:
        labels = [1 if k >= like_rating else 0 for _, v, k in reviews
                  if v == video and (k >= like_rating or k <= nope_rating)]  # fmt: skip
        others = [int(o) for u, v, o in swipes if v == video and u != user]
        if not labels or not others:
            continue
        for name, scores in (("pseudo", labels), ("real", others)):
            for score in scores:
                key = (score, int(liked))
                cells[name][key] = cells[name].get(key, 0) + 1 / len(scores)

    def auc(c):
        tpr = c.get((1, 1), 0) / (c.get((1, 1), 0) + c.get((0, 1), 0))
        tnr = c.get((0, 0), 0) / (c.get((0, 0), 0) + c.get((1, 0), 0))
        return (tpr + tnr) / 2

    return auc(cells["pseudo"]), auc(cells["real"])


def test_the_per_level_like_rates_intervals_and_thresholds(db):
    conn, reviews, swipes = db
    result = calibrate(conn)
    json.dumps(result)  # JSON-ready
    levels = {level["rating"]: level for level in result["levels"]}

    # Hand-computed: pairs = reviews x swipes per video; the doubly reviewed rating-3 video
    # (6 likes) counts twice: (2*6 + 8+6+8+6+8+6+8) / (9 * 10).
    expected = {1: (8, 80), 2: (8, 80), 3: (62, 90), 4: (64, 80), 5: (64, 80)}
    for k, (likes, pairs) in expected.items():
        level = levels[k]
        assert (level["likes"], level["pairs"]) == (likes, pairs)
        assert level["like_rate"] == pytest.approx(likes / pairs)
        assert level["videos"] == VIDEOS_PER_LEVEL and level["swipes"] == 80
        assert level["reviews"] == (9 if k == 3 else 8)
        low, high = level["ci"]
        assert low < TRUTH[k] < high and low < level["like_rate"] < high
    assert result["base"]["like_rate"] == pytest.approx(206 / 410)
    assert result["base"]["pairs"] == 410 and result["base"]["videos"] == 40

    # The rating-1 interval by hand: R = 0.1, residuals y - R x = -1, +1 on 8 videos.
    se = (8 / 7 * 8) ** 0.5 / 80
    assert levels[1]["se"] == pytest.approx(se)
    assert levels[1]["ci"][1] == pytest.approx(0.1 + 2.3646243 * se, rel=1e-6)

    assert [levels[k]["verdict"] for k in range(1, 6)] == ["nope", "nope", "like", "like",
                                                            "like"]  # fmt: skip
    assert result["thresholds"] == {"like_rating": 3, "nope_rating": 2, "source": "data"}
    assert result["reasons"] == []
    FeatureConfig(**result["feature_config"])

    # Agreement: naive 4/2 drops rating 3; the chosen cuts read it as like.
    assert levels[3]["reading"] == {"chosen": "like", "naive": "dropped"}
    assert levels[3]["agreement"] == {"chosen": pytest.approx(62 / 90), "naive": None}
    assert levels[1]["agreement"]["chosen"] == pytest.approx(0.9)
    naive, chosen = result["agreement"]["naive"], result["agreement"]["chosen"]
    assert naive["agreement"] == pytest.approx((72 + 72 + 64 + 64) / 320)
    assert naive["coverage"] == pytest.approx(320 / 410)
    assert chosen["agreement"] == pytest.approx((72 + 72 + 62 + 64 + 64) / 410)
    assert chosen["coverage"] == 1

    # The weight: both AUCs as enumeration gives them, the ratio clipped to [0, 1].
    weight = result["weight"]
    for name, (like, nope) in (("chosen", (3, 2)), ("naive", (4, 2))):
        auc_pseudo, auc_real = brute_force_aucs(reviews, swipes, like, nope)
        assert weight[name]["auc_pseudo"] == pytest.approx(auc_pseudo)
        assert weight[name]["auc_real"] == pytest.approx(auc_real)
        ratio = (auc_pseudo - 0.5) / (auc_real - 0.5)
        assert weight[name]["weight"] == pytest.approx(min(max(ratio, 0), 1))
    assert 0 < weight["pseudo_user_weight"] <= 1
    assert result["feature_config"]["pseudo_user_weight"] == weight["pseudo_user_weight"]


def test_noisier_reviews_weigh_less(db):
    conn, reviews, _ = db
    clean = calibrate(conn)["weight"]["pseudo_user_weight"]
    # Two of each level's eight reviews (levels 1, 2, 4, 5) say the opposite.
    flipped = [v for i, (_, v, k) in enumerate(reviews) if k != 3 and i % 4 == 0]
    with conn, conn.cursor() as cur:
        cur.execute(
            "update video_reviews set rating = 6 - rating where video_id = any(%s)", (flipped,)
        )
    noisy = calibrate(conn)
    assert 0 <= noisy["weight"]["pseudo_user_weight"] < clean


def test_too_little_overlap_keeps_the_defaults(db, db_url):
    conn, _, _ = db
    result = calibrate(conn, min_pairs=411)
    assert result["thresholds"] == {"like_rating": 4, "nope_rating": 2, "source": "default"}
    assert result["feature_config"] == {"like_rating": 4, "nope_rating": 2,
                                        "pseudo_user_weight": 1.0}  # fmt: skip
    assert result["weight"]["source"] == "default"
    assert result["reasons"][0].startswith("too little overlap: 410 (review, swipe) pairs")
    assert "like-rate" in render_text(result)

    with conn, conn.cursor() as cur:
        cur.execute("delete from user_video_decisions")
    empty = calibrate(conn)
    assert empty["base"]["pairs"] == 0 and empty["base"]["like_rate"] is None
    assert {level["verdict"] for level in empty["levels"]} == {"no data"}
    assert empty["feature_config"] == {"like_rating": 4, "nope_rating": 2,
                                       "pseudo_user_weight": 1.0}  # fmt: skip
    assert "too little overlap" in render_text(empty)


def test_until_leaves_out_later_reviews_and_swipes(db):
    conn, reviews, swipes = db
    before = calibrate(conn)
    with conn, conn.cursor() as cur:
        # Later: a reviewer pans the rating-5 videos, every user turns round on rating-1 ones.
        execute_values(
            cur,
            "insert into video_reviews (reviewer_id, video_id, rating, created_at) values %s",
            [("r-late", v, 1, LATER) for _, v, k in reviews if k == 5],
        )
        execute_values(
            cur,
            "insert into user_video_decisions (user_id, video_id, decision, created_at)"
            " values %s",
            [(u, v, "nope" if liked else "like", LATER) for u, v, liked in swipes
             if v in {v for _, v, k in reviews if k == 1}],
        )  # fmt: skip
    now = calibrate(conn)
    # Rating 1: the turned-round videos (72 of 80 now liked) and the panned ones (64 of 80).
    assert now["levels"][0]["like_rate"] == pytest.approx((72 + 64) / 160)
    assert now["base"]["reviews"] == len(reviews) + VIDEOS_PER_LEVEL
    windowed = calibrate(conn, until=UNTIL)
    assert windowed["until"] == "2026-02-01T00:00:00+00:00"
    assert {**windowed, "until": None} == before
    assert calibrate(conn, until=datetime(2026, 2, 1)) == windowed  # naive: UTC


def test_thresholds_from_verdicts_out_of_order():
    default = FeatureConfig()
    verdicts = dict(enumerate(["nope", "like", "nope", "like", "neither"], start=1))
    like, nope, reasons = choose_thresholds(verdicts, default)
    assert (like, nope) == (4, 1)
    assert any(r.startswith("rating 2 reads like but is dropped") for r in reasons)
    assert any(r.startswith("rating 3 reads nope but is dropped") for r in reasons)
    assert any(r.startswith("rating 5 reads neither but counts as like") for r in reasons)
    # Only nopes: like_rating keeps the default; only likes above 4: nope_rating the default.
    only_nope = {1: "nope", 2: "nope", 3: "nope", 4: "neither", 5: "neither"}
    assert choose_thresholds(only_nope, default)[:2] == (4, 3)
    only_like = {1: "neither", 2: "neither", 3: "neither", 4: "neither", 5: "like"}
    assert choose_thresholds(only_like, default)[:2] == (5, 2)
    assert choose_thresholds(dict.fromkeys(range(1, 6), "neither"), default)[:2] == (4, 2)
    assert choose_thresholds({1: "like", 2: "nope", 3: "neither", 4: "neither", 5: "neither"},
                             default)[:2] == (4, 2)  # fmt: skip
    # A reversed scale cannot be followed; the nearest valid cuts, said so.
    top_nope = {1: "neither", 2: "neither", 3: "neither", 4: "neither", 5: "nope"}
    like, nope, reasons = choose_thresholds(top_nope, default)
    assert (like, nope) == (5, 4) and "rating 5 reads nope: nope_rating 4" in reasons[0]
    bottom_like = {1: "like", 2: "neither", 3: "neither", 4: "neither", 5: "neither"}
    like, nope, reasons = choose_thresholds(bottom_like, default)
    assert (like, nope) == (2, 1) and "rating 1 reads like: like_rating 2" in reasons[0]
    FeatureConfig(like_rating=like, nope_rating=nope)


def test_the_command_prints_the_table_or_the_json(db, db_url, tmp_path, monkeypatch, capsys):
    from swiperec.cli import main

    conn, _, _ = db
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SWIPEREC_HOME", str(tmp_path / "home"))

    assert main(["migration", "calibrate"]) == 0
    text = capsys.readouterr().out
    assert "chosen (data): like_rating 3, nope_rating 2, pseudo_user_weight" in text
    assert text.count("\n") >= 12 and "naive  like_rating 4, nope_rating 2" in text
    row = next(line.split() for line in text.splitlines() if line.split()[:1] == ["3"])
    assert row[:5] == ["3", "9", "8", "80", "90"] and row[5] == "0.689"

    assert main(["migration", "calibrate", "--until", "2026-02-01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == calibrate(conn, until=UNTIL)
    assert main(["migration", "calibrate", "--min-pairs", "1000"]) == 0
    assert "too little overlap" in capsys.readouterr().out
    assert main(["migration", "calibrate", "--until", "Feb 1"]) == 2
    assert "--until is a date" in capsys.readouterr().err
