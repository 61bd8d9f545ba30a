"""The ranking stage on a real PostgreSQL: `enhanced_two_tower_recommendations` retrieves the
cosine top-N and ranks it by each video's stored terms, sigmoid(rank_scale * cosine +
rank_bias), plus the set's weights of the match with the user's history and of the video's
own swipe evidence; a set without terms ranks by the cosine; live writes carry the terms.

The vectors are built so every cosine to the user is known: the user is e0 and video i is
cos_i * e0 + sqrt(1 - cos_i^2) * e_{i+1}.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import numpy as np
import psycopg2
import pytest

from swiperec.embeddings import store

pytestmark = pytest.mark.integration

USER = str(uuid.UUID(int=7))
SMALL_INDEX = store.IndexParams(maintenance_work_mem="64MB", parallel_workers=0)
COSINES = [0.9, 0.8, 0.6, 0.3, 0.1]  # videos 1..5
# (bias, scale): video 3 has a strong appeal, video 5 the strongest but it is far (cos 0.1).
TERMS = [(0.0, 4.0), (-1.0, 4.0), (2.0, 4.0), (0.0, 4.0), (9.0, 4.0)]


def vectors() -> np.ndarray:
    x = np.zeros((len(COSINES), 768), np.float32)
    for i, c in enumerate(COSINES):
        x[i, 0], x[i, i + 1] = c, math.sqrt(1 - c * c)
    return x


def serve(conn, version: str, ranking, new_release_bonus: float | None = None) -> None:
    user = np.zeros((1, 768), np.float32)
    user[0, 0] = 1.0
    ids = list(range(1, len(COSINES) + 1))
    with store.writing(conn, version):
        sets = (("video", ids, vectors(), ranking), ("user", [USER], user, None))
        for kind, keys, x, terms in sets:
            bonus = new_release_bonus if kind == "video" else None
            store.begin_set(conn, version, kind, expected_shards=1, new_release_bonus=bonus)
            store.copy_shard(conn, version, kind, "0", keys, x, terms)
            store.finish_set(conn, version, kind, SMALL_INDEX)
    with conn, conn.cursor() as cur:
        store.switch_serving(cur, version)


def recommend(conn, candidates: int) -> list[tuple[int, float]]:
    with conn.cursor() as cur:
        cur.execute("select video_id, score from enhanced_two_tower_recommendations(%s, %s) "
                    "order by rank", (USER, candidates))  # fmt: skip
        rows = cur.fetchall()
    conn.rollback()
    return [(int(v), float(s)) for v, s in rows]


@pytest.fixture
def catalogue(conn):
    with conn, conn.cursor() as cur:
        cur.execute("insert into videos (id, external_id, title) select g, 'v' || g, 't' || g "
                    "from generate_series(1, %s) g", (len(COSINES),))  # fmt: skip
    return conn


def set_match_weights(conn, weights, half_life_days: float | None) -> None:
    """The video set's match weights as the table holds them, 6 (a model of the match
    features alone) or 8 (with the video's evidence), written directly: `begin_set` takes
    what the current model writes."""
    with conn, conn.cursor() as cur:
        cur.execute("update embedding_sets set match_weights = %s::real[], "
                    "match_half_life_days = %s where model_version = 'v1' and kind = 'video'",
                    (weights, half_life_days))  # fmt: skip


def like_score(video: int) -> float:
    bias, scale = TERMS[video - 1]
    return 1 / (1 + math.exp(-(scale * COSINES[video - 1] + bias)))


def test_candidates_are_retrieved_by_cosine_then_ranked_by_their_terms(catalogue):
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    # Four candidates by cosine (videos 1-4: video 5 is not retrieved, whatever its bias),
    # ranked by the like score: video 3 (2 + 2.4) before 1 (3.6), 2 (2.2), 4 (1.2).
    ranked = recommend(catalogue, 4)
    assert [v for v, _ in ranked] == [3, 1, 2, 4]
    for video, score in ranked:
        assert score == pytest.approx(like_score(video), abs=1e-3)
    # With every video a candidate, video 5's appeal (9 + 0.4) puts it first.
    assert [v for v, _ in recommend(catalogue, 5)][:2] == [5, 3]


def test_a_set_without_ranking_terms_ranks_by_cosine(catalogue):
    serve(catalogue, "v1", None)
    ranked = recommend(catalogue, 5)
    assert [v for v, _ in ranked] == [1, 2, 3, 4, 5]
    for video, score in ranked:
        assert score == pytest.approx(COSINES[video - 1], abs=1e-3)


def test_each_row_carries_its_cosines_to_the_rows_ranked_after_it(catalogue):
    # The upper triangle of the candidates' cosine matrix, in rank order, for the Edge
    # Function's MMR to mirror; video i . video j = cos_i * cos_j (their other axes differ).
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    with catalogue.cursor() as cur:
        cur.execute("select video_id, similarities from enhanced_two_tower_recommendations(%s, 5)"
                    " order by rank", (USER,))  # fmt: skip
        rows = cur.fetchall()
    catalogue.rollback()
    ranked = [int(v) for v, _ in rows]
    assert ranked == [5, 3, 1, 2, 4]
    for i, (_, similarities) in enumerate(rows):
        expected = [COSINES[ranked[i] - 1] * COSINES[j - 1] for j in ranked[i + 1 :]]
        assert similarities == pytest.approx(expected, abs=1e-3)
    assert rows[-1][1] == []  # the last row: nothing ranked after it


def test_live_writes_replace_a_videos_terms_and_refuse_bad_ones(catalogue):
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    # The real-time worker re-embeds video 4 with a strong appeal: it now ranks first.
    store.upsert(catalogue, "v1", "video", [4], vectors()[3:4], np.float32([[5.0, 4.0]]))
    assert recommend(catalogue, 4)[0][0] == 4
    for bad in (np.float32([[1.0, 0.0]]), np.float32([[np.nan, 1.0]]), np.float32([1.0, 2.0])):
        with pytest.raises(ValueError, match="ranking terms"):
            store.upsert(catalogue, "v1", "video", [4], vectors()[3:4], bad)
    with pytest.raises(ValueError, match="only video sets"):
        store.upsert(catalogue, "v1", "user", [USER], vectors()[:1], np.float32([[0.0, 1.0]]))
    # Nothing of the refused writes landed.
    assert recommend(catalogue, 4)[0][0] == 4


def test_new_releases_join_the_candidates_with_an_exploration_bonus(catalogue):
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    with catalogue, catalogue.cursor() as cur:  # video 4 came out last week, video 5 long ago
        cur.execute("update videos set release_date = case id when 4 then current_date - 7 "
                    "else date '2020-01-01' end")  # fmt: skip
    # The three nearest by cosine (1-3), plus the nearest new release (4), whose logit
    # 4 * 0.3 + 0 gains the exploration bonus of 1.
    ranked = dict(recommend(catalogue, 3))
    assert set(ranked) == {1, 2, 3, 4}
    assert ranked[4] == pytest.approx(1 / (1 + math.exp(-(4 * 0.3 + 1.0))), abs=1e-3)
    assert ranked[3] == pytest.approx(like_score(3), abs=1e-3)  # old videos: no bonus
    # A release older than 60 days is no new release: video 5 stays out; so is one announced
    # for a date still to come.
    assert 5 not in ranked
    with catalogue, catalogue.cursor() as cur:
        cur.execute("update videos set release_date = current_date + 30 where id = 5")
    assert 5 not in dict(recommend(catalogue, 3))


def test_new_releases_are_counted_in_utc_days_whatever_the_sessions_time_zone(catalogue):
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    with catalogue.cursor() as cur:  # one transaction: now() holds still
        cur.execute("select (now() at time zone 'UTC')::date,"
                    " extract(hour from now() at time zone 'UTC')")  # fmt: skip
        today, hour = cur.fetchone()
        # A zone whose day is not UTC's at this hour: UTC+14 from 10:00 UTC, else UTC-11.
        zone = "Pacific/Kiritimati" if hour >= 10 else "Pacific/Pago_Pago"
        cur.execute("set local timezone = %s", (zone,))
        cur.execute("select current_date")
        assert cur.fetchone()[0] == today + timedelta(days=1 if hour >= 10 else -1)
        # Video 4 came out today and video 5 comes out tomorrow, in UTC days: the day ahead's
        # session would count 5 as out, the day behind's would not count 4 as out yet.
        cur.execute("update videos set release_date = case id when 4 then %s when 5 then %s"
                    " else date '2020-01-01' end", (today, today + timedelta(days=1)))  # fmt: skip
        cur.execute("select video_id from enhanced_two_tower_recommendations(%s, 3)", (USER,))
        served = {int(v) for (v,) in cur.fetchall()}
    catalogue.rollback()
    assert served == {1, 2, 3, 4}  # the three nearest, and today's release


def test_the_exploration_bonus_is_the_video_sets(catalogue):
    # A version written with its model's bonus serves with it (v1 without one: 1.0, as the sets
    # written before the setting); each version keeps its own.
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    serve(catalogue, "v2", np.array(TERMS, np.float32), new_release_bonus=2.5)
    with catalogue, catalogue.cursor() as cur:
        cur.execute("update videos set release_date = case id when 4 then current_date - 7 "
                    "else date '2020-01-01' end")  # fmt: skip
    # v2 serves: video 4's logit 4 * 0.3 + 2.5 puts it above video 1 (4 * 0.9 = 3.6), below
    # video 3 (4 * 0.6 + 2).
    ranked = recommend(catalogue, 3)
    assert [v for v, _ in ranked] == [3, 4, 1, 2]
    assert ranked[1][1] == pytest.approx(1 / (1 + math.exp(-(4 * 0.3 + 2.5))), abs=1e-3)
    with catalogue, catalogue.cursor() as cur:
        store.switch_serving(cur, "v1")
    assert dict(recommend(catalogue, 3))[4] == pytest.approx(
        1 / (1 + math.exp(-(4 * 0.3 + 1.0))), abs=1e-3
    )


def test_the_exploration_bonus_belongs_to_a_video_set_and_must_be_finite_and_not_negative(conn):
    for kind, bonus, problem in (("user", 1.0, "video set"), ("video", -0.5, ">= 0"),
                                 ("video", float("nan"), "finite")):  # fmt: skip
        with pytest.raises(ValueError, match=problem):
            store.begin_set(conn, "v1", kind, expected_shards=1, new_release_bonus=bonus)
    assert store.set_state(conn, "v1", "video") is None  # nothing was started
    # The table refuses it too, whoever writes it.
    store.begin_set(conn, "v1", "video", expected_shards=1, new_release_bonus=0.0)
    store.begin_set(conn, "v1", "user", expected_shards=1)
    for kind, bonus in (("video", -1.0), ("video", float("nan")), ("video", float("inf")),
                        ("user", 1.0)):  # fmt: skip
        with pytest.raises(psycopg2.errors.CheckViolation), conn, conn.cursor() as cur:
            cur.execute("update embedding_sets set new_release_bonus = %s "
                        "where model_version = 'v1' and kind = %s", (bonus, kind))  # fmt: skip
    with conn.cursor() as cur:
        cur.execute("select kind, new_release_bonus from embedding_sets order by kind")
        assert cur.fetchall() == [("user", None), ("video", 0.0)]
    conn.rollback()


def test_a_set_without_ranking_terms_explores_nothing(catalogue):
    serve(catalogue, "v1", None)
    with catalogue, catalogue.cursor() as cur:
        cur.execute("update videos set release_date = current_date - 7 where id = 5")
    assert [v for v, _ in recommend(catalogue, 3)] == [1, 2, 3]


def test_a_live_write_without_terms_keeps_the_videos_terms(catalogue):
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    store.upsert(catalogue, "v1", "video", [3], vectors()[2:3])
    ranked = dict(recommend(catalogue, 4))
    assert ranked[3] == pytest.approx(like_score(3), abs=1e-3)


# -- match features ------------------------------------------------------------------------
# Videos 1-5 are the candidates (as above); videos 6-9 are what the user decided, sharing
# makers, genres and performers with them.
CONTENT = {  # id: (maker, genres, performers)
    1: ("A", ["恋愛", "ドラマ"], ["P", "Q"]),
    2: ("B", ["恋愛"], ["Q"]),
    3: (None, [], []),
    4: ("A", ["アクション"], ["R"]),
    5: ("C", ["ドラマ", "アクション", "恋愛"], ["P", "R", "S"]),
    6: ("A", ["恋愛"], ["P"]),
    7: ("B", ["ドラマ", "恋愛", ""], ["Q", "R", ""]),  # '' is no genre, no performer
    8: ("", ["アクション"], ["R"]),  # '' is no maker
    9: ("C", ["恋愛"], ["S"]),
    10: ("B", ["恋愛"], ["Q"]),
}
DAY = 86_400
DECISIONS = [
    (10, "like", -20_000 * DAY),  # over 1,000 half-lives before the newest: weighs nothing
    (6, "like", 0),
    (7, "like", 2 * DAY),
    (8, "nope", 3 * DAY),
    (9, "nope", 10 * DAY),
    (6, "nope", 11 * DAY),  # video 6 liked, later noped: both count
]
MATCH = [2.0, -1.0, 1.5, -0.5, 3.0, -2.0]
HALF_LIFE_DAYS = 5.0
OTHER = str(uuid.UUID(int=8))


def test_the_match_with_the_users_history_joins_the_like_logit(conn):
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from swiperec.features.config import FeatureConfig
    from swiperec.features.events import catalogue_from_table
    from swiperec.features.user_history import UserHistory

    ids = sorted(CONTENT)
    with conn, conn.cursor() as cur:
        for video in ids:
            maker, genres, performers = CONTENT[video]
            cur.execute("insert into videos (id, external_id, title, maker, genres, performers) "
                        "values (%s, %s, %s, %s, %s, %s)",
                        (video, f"v{video}", f"t{video}", maker, genres, performers))  # fmt: skip
        start = datetime(2026, 11, 1, tzinfo=UTC)
        for video, decision, seconds in DECISIONS:
            cur.execute("insert into user_video_decisions (user_id, video_id, decision, "
                        "created_at) values (%s, %s, %s, %s)",
                        (USER, video, decision, start + timedelta(seconds=seconds)))  # fmt: skip
    serve(conn, "v1", np.array(TERMS, np.float32))
    # a model of the match features alone: 6 weights, no evidence terms, though the
    # candidates have swipes (the user's own, on videos 6-10, and these of another user)
    set_match_weights(conn, MATCH, HALF_LIFE_DAYS)
    with conn, conn.cursor() as cur:
        cur.execute("insert into user_video_decisions (user_id, video_id, decision) "
                    "select %s, g, 'like' from generate_series(1, 5) g", (OTHER,))  # fmt: skip

    # The same shares by the features' own code: UserHistory over the same decisions.
    catalogue = catalogue_from_table(pa.table({
        "id": ids, "external_id": [f"v{v}" for v in ids], "title": [f"t{v}" for v in ids],
        "maker": [CONTENT[v][0] for v in ids], "genres": [CONTENT[v][1] for v in ids],
        "performers": [CONTENT[v][2] for v in ids],
    }))  # fmt: skip
    history = UserHistory(catalogue, FeatureConfig(recency_half_life_days=HALF_LIFE_DAYS), False)
    t0 = 1_000_000_000 * 1_000_000
    for video, decision, seconds in DECISIONS:
        history.add(video, int(decision == "like"), t0 + seconds * 1_000_000)
    served = dict(recommend(conn, 5))
    assert set(served) == {1, 2, 3, 4, 5}
    for video in range(1, 6):
        match = history.match(int(catalogue.index_of([video])[0]))
        logit = TERMS[video - 1][1] * COSINES[video - 1] + TERMS[video - 1][0]
        served_logit = math.log(served[video] / (1 - served[video]))
        assert served_logit == pytest.approx(logit + float(np.dot(MATCH, match)), abs=2e-3), (
            video, match,
        )  # fmt: skip
        # video 3 has nothing to match; each of the others matches something
        assert (np.dot(MATCH, match) == 0) == (video == 3)
    # The 20,000-day-old like of maker B weighs ~nothing: B's liked share is video 7's like
    # (2 days after video 6's, half-life 5) against maker A's from video 6.
    assert history.match(1)[0] == pytest.approx(2**0.4 / (1 + 2**0.4))


def test_match_weights_belong_to_a_video_set_and_must_be_six_or_eight_finite_numbers(conn):
    weights = [*MATCH, 0.5, 0.1]
    with pytest.raises(ValueError, match="video set"):
        store.begin_set(conn, "v1", "user", expected_shards=1, match=(weights, 5.0))
    with pytest.raises(ValueError, match="8 finite numbers"):
        store.begin_set(conn, "v1", "video", expected_shards=1, match=(MATCH, 5.0))
    with pytest.raises(ValueError, match="half-life"):
        store.begin_set(conn, "v1", "video", expected_shards=1, match=(weights, 0.0))
    # Nothing was started.
    assert store.set_state(conn, "v1", "video") is None
    # The table refuses what the function could not use, whoever writes it.
    store.begin_set(conn, "v1", "video", expected_shards=1)
    for weights, half_life in (
        (MATCH, None),
        (None, 5.0),
        ([1, 2, 3, 4, 5, None], 5.0),
        ([[1, 2, 3], [4, 5, 6]], 5.0),
        ([1, 2, 3, 4, 5, float("nan")], 5.0),
        (MATCH, float("nan")),
        (MATCH, 0.0),
        ([*MATCH, 0.5], 5.0),  # 7: neither the match features nor all of them with evidence
        ([*MATCH, 0.5, float("nan")], 5.0),
        ([*MATCH, float("-inf"), 0.1], 5.0),
        ([*MATCH, 0.5, None], 5.0),
        ([*MATCH, 0.5, 0.1, 0.0], 5.0),
    ):
        with pytest.raises(psycopg2.errors.CheckViolation), conn, conn.cursor() as cur:
            cur.execute("update embedding_sets set match_weights = %s::real[], "
                        "match_half_life_days = %s where model_version = 'v1'",
                        (weights, half_life))  # fmt: skip
    # 6 weights (a model of the match features alone) and 8 (with the video's evidence) are
    # what the function uses; so is none.
    for weights, half_life in ((MATCH, 5.0), ([*MATCH, 0.5, 0.1], 5.0), (None, None)):
        set_match_weights(conn, weights, half_life)
        with conn.cursor() as cur:
            cur.execute("select match_weights from embedding_sets where model_version = 'v1'")
            assert cur.fetchone()[0] == weights
        conn.rollback()


# -- the video's swipe evidence ------------------------------------------------------------
# Other users' swipes on the candidates (the user's own would exclude them): (likes, nopes).
SWIPES = {1: (0, 3), 2: (1, 1), 3: (0, 0), 4: (9, 0), 5: (2, 0)}


def evidence(video: int) -> tuple[float, float]:
    likes, nopes = SWIPES[video]
    return math.log((likes + 1) / (nopes + 1)), math.log(1 + likes + nopes)


def add_swipes(conn, swipes) -> None:
    with conn, conn.cursor() as cur:
        for video, (likes, nopes) in swipes.items():
            for i, decision in enumerate(["like"] * likes + ["nope"] * nopes):
                cur.execute("insert into user_video_decisions (user_id, video_id, decision) "
                            "values (%s, %s, %s)",
                            (str(uuid.UUID(int=100 + i)), video, decision))  # fmt: skip


def test_the_videos_swipe_evidence_joins_the_like_logit(catalogue):
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    add_swipes(catalogue, SWIPES)
    # Weight 7 alone: the like log-odds. Video 4 (logit 1.2, 9 likes) now ranks first and
    # video 1 (3.6, 3 nopes) falls behind video 2 (2.2, even).
    w7 = 2.0
    set_match_weights(catalogue, [0.0] * 6 + [w7, 0.0], HALF_LIFE_DAYS)
    ranked = recommend(catalogue, 4)
    assert [v for v, _ in ranked] == [4, 3, 2, 1]
    for video, score in ranked:
        logit = math.log(like_score(video) / (1 - like_score(video)))
        expected = 1 / (1 + math.exp(-(logit + w7 * evidence(video)[0])))
        assert score == pytest.approx(expected, abs=1e-3), video
    # Both: the log-odds and how much evidence there is.
    w7, w8 = 0.7, -0.4
    set_match_weights(catalogue, [0.0] * 6 + [w7, w8], HALF_LIFE_DAYS)
    for video, score in recommend(catalogue, 5):
        bias, scale = TERMS[video - 1]
        odds, swipes = evidence(video)
        expected = 1 / (1 + math.exp(-(scale * COSINES[video - 1] + bias + w7 * odds
                                       + w8 * swipes)))  # fmt: skip
        assert score == pytest.approx(expected, abs=1e-3), video
    # As of the request: a swipe counts from the next call on.
    add_swipes(catalogue, {3: (0, 4)})
    served = dict(recommend(catalogue, 5))
    logit = 4 * 0.6 + 2.0 + w7 * math.log(1 / 5) + w8 * math.log(5)
    assert served[3] == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-3)


def test_sets_without_evidence_weights_rank_as_before(catalogue):
    serve(catalogue, "v1", np.array(TERMS, np.float32))
    add_swipes(catalogue, SWIPES)
    # 6 zero weights (a model of the match features alone) and none: the like score of the
    # video's terms alone, however it was swiped
    for weights, half_life in (([0.0] * 6, HALF_LIFE_DAYS), (None, None)):
        set_match_weights(catalogue, weights, half_life)
        ranked = recommend(catalogue, 4)
        assert [v for v, _ in ranked] == [3, 1, 2, 4]
        for video, score in ranked:
            assert score == pytest.approx(like_score(video), abs=1e-3)
