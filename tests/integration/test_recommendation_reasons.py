"""`public.recommendation_reason`, the one home of the reasons' wording, on a real PostgreSQL.

Every case calls the SQL function with one item's evidence, as the Edge Function and
`swiperec.serving.recommend` do, and checks the exact sentence.
"""

from __future__ import annotations

import psycopg2
import pytest

pytestmark = pytest.mark.integration

SIGNATURE = "public.recommendation_reason(text, text[], text, real, text, text, text)"
CALL = (
    "select public.recommendation_reason("
    "%(source)s::text, %(genres)s::text[], %(liked_title)s::text, %(liked_similarity)s::real,"
    " %(shared_genre)s::text, %(shared_maker)s::text, %(shared_performer)s::text)"
)

# An item with no evidence beyond its genres, and one with every kind of evidence.
NONE = {
    "source": "embedding",
    "genres": ["ドラマ", "コメディ"],
    "liked_title": None,
    "liked_similarity": None,
    "shared_genre": None,
    "shared_maker": None,
    "shared_performer": None,
}
ALL = {
    **NONE,
    "liked_title": "病院涙#5",
    "liked_similarity": 0.62,
    "shared_genre": "コメディ",
    "shared_maker": "ホワイトライト企画",
    "shared_performer": "清水颯帆",
}
NO_LIKED = {**ALL, "liked_title": None, "liked_similarity": None}

CASES = {
    # 1. the nearest liked video, for either personal source
    "liked video first": (ALL, "because you liked 病院涙#5"),
    "liked video, cold start": ({**ALL, "source": "recent_likes"}, "because you liked 病院涙#5"),
    "liked video, similarity unknown": (
        {**ALL, "liked_similarity": None}, "because you liked 病院涙#5"
    ),
    "liked video, barely similar": (
        {**ALL, "liked_similarity": 1e-6}, "because you liked 病院涙#5"
    ),
    "liked title kept as written": (
        {**ALL, "liked_title": " 病院 涙 #5 "}, "because you liked  病院 涙 #5 "
    ),
    "liked video, no source": ({**ALL, "source": None}, "because you liked 病院涙#5"),
    # a liked video that is not similar is no reason
    "similarity below 0 falls through": (
        {**ALL, "liked_similarity": -0.2}, "because you like コメディ"
    ),
    "similarity 0 falls through": ({**ALL, "liked_similarity": 0.0}, "because you like コメディ"),
    "similarity NaN falls through": (
        {**ALL, "liked_similarity": float("nan")}, "because you like コメディ"
    ),
    # 2.-4. a shared genre, maker, performer, in that order
    "shared genre": (NO_LIKED, "because you like コメディ"),
    "shared maker": ({**NO_LIKED, "shared_genre": None}, "more from ホワイトライト企画"),
    "shared performer": (
        {**NO_LIKED, "shared_genre": None, "shared_maker": ""}, "featuring 清水颯帆"
    ),
    "performer alone": ({**NONE, "shared_performer": "清水颯帆"}, "featuring 清水颯帆"),
    # blank evidence is no evidence
    "blank title and genre": (
        {**ALL, "liked_title": " ", "shared_genre": "\u3000"}, "more from ホワイトライト企画"
    ),
    "blank title, genre and maker": (
        {**ALL, "liked_title": "\t\n", "shared_genre": "", "shared_maker": "\u00a0\u3000"},
        "featuring 清水颯帆",
    ),
    "every piece of evidence blank": (
        {**ALL, "liked_title": "  ", "shared_genre": "\u2003", "shared_maker": "\r",
         "shared_performer": "\ufeff"},
        "popular in ドラマ",
    ),
    "blank title with a high similarity": (
        {**NO_LIKED, "liked_title": "\u3000\u3000", "liked_similarity": 0.9},
        "because you like コメディ",
    ),
    # 5. no evidence: popular in the video's first non-blank genre
    "no evidence": (NONE, "popular in ドラマ"),
    "no evidence, no genres": ({**NONE, "genres": []}, "popular right now"),
    "no evidence, genres null": ({**NONE, "genres": None}, "popular right now"),
    "first genre blank": ({**NONE, "genres": [" ", "旅行"]}, "popular in 旅行"),
    "first genres blank or null": (
        {**NONE, "genres": ["\u3000", None, "", "旅行", "ドラマ"]}, "popular in 旅行"
    ),
    "every genre blank": ({**NONE, "genres": [" ", "\u3000", None]}, "popular right now"),
    # the popular fallback always says popular, whatever else it carries
    "popular ignores likes": ({**ALL, "source": "popular"}, "popular in ドラマ"),
    "popular, no genres": ({**NONE, "source": "popular", "genres": []}, "popular right now"),
    "popular, no genres, with likes": (
        {**ALL, "source": "popular", "genres": None}, "popular right now"
    ),
    # the sentences themselves
    "wording: liked": ({**NONE, "liked_title": "X"}, "because you liked X"),
    "wording: genre": ({**NONE, "shared_genre": "X"}, "because you like X"),
    "wording: maker": ({**NONE, "shared_maker": "X"}, "more from X"),
    "wording: performer": ({**NONE, "shared_performer": "X"}, "featuring X"),
    "wording: popular in": ({**NONE, "source": "popular", "genres": ["X"]}, "popular in X"),
    "wording: popular": ({**NONE, "source": "popular", "genres": []}, "popular right now"),
}  # fmt: skip


@pytest.mark.parametrize(("evidence", "reason"), CASES.values(), ids=CASES.keys())
def test_reason_for_the_evidence(conn, evidence, reason):
    with conn.cursor() as cur:
        cur.execute(CALL, evidence)
        assert cur.fetchone()[0] == reason
    conn.rollback()


def test_it_takes_the_rows_of_enhanced_two_tower_recommendations_as_they_are(conn):
    """Its arguments have the names and types of the SQL function's evidence columns."""
    with conn.cursor() as cur:
        cur.execute(
            "select a.name, format_type(a.type, null) from pg_proc p,"
            " unnest(p.proallargtypes, p.proargnames, p.proargmodes) as a(type, name, mode)"
            " where p.oid = 'public.enhanced_two_tower_recommendations'::regproc"
            " and a.mode = 't'"
        )
        columns = dict(cur.fetchall())
        cur.execute(
            "select a.name, format_type(a.type, null) from pg_proc p,"
            " unnest(p.proargtypes::oid[], p.proargnames) with ordinality as a(type, name, n)"
            f" where p.oid = '{SIGNATURE}'::regprocedure order by a.n"
        )
        arguments = cur.fetchall()
        cur.execute(
            f"select provolatile, proparallel, obj_description(oid, 'pg_proc') from pg_proc"
            f" where oid = '{SIGNATURE}'::regprocedure"
        )
        volatility, parallel, comment = cur.fetchone()
    conn.rollback()
    assert arguments == [
        ("source", "text"),
        ("genres", "text[]"),
        ("liked_title", "text"),
        ("liked_similarity", "real"),
        ("shared_genre", "text"),
        ("shared_maker", "text"),
        ("shared_performer", "text"),
    ]
    assert all(columns[name] == type_ for name, type_ in arguments)
    assert (volatility, parallel) == ("i", "s")
    assert comment.startswith("The one home of the wording of recommendation reasons")


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_api_roles_cannot_run_it(conn, role):
    with conn.cursor() as cur:
        cur.execute(
            f"select has_function_privilege(%s, '{SIGNATURE}', 'execute'),"
            f" has_function_privilege(p.proowner, p.oid, 'execute')"
            f" from pg_proc p where p.oid = '{SIGNATURE}'::regprocedure",
            (role,),
        )
        assert cur.fetchone() == (False, True)
        cur.execute(f"set local role {role}")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(CALL, NONE)
    conn.rollback()
