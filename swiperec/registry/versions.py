"""Model versions in the database: record an evaluation, find the one in production.

    record_evaluation(conn, "v7", "gs://bucket/models/v7", results, blessing)
    production = production_evaluation(conn)   # None when nothing serves yet

The version in production is the one whose embeddings serve (`serving_state`); a blessed
candidate is compared against its recorded evaluation.
"""

from __future__ import annotations

import json

_LEFT_OUT = ("curves", "score_distributions", "embeddings")


def record_evaluation(conn, version: str, model_uri: str, results: dict, blessing: dict) -> None:
    """Insert or update `version` with its evaluation; stage `blessed` or `candidate` (a
    version already in production or archived keeps its stage)."""
    evaluation = {k: v for k, v in results.items() if k not in _LEFT_OUT}
    stage = "blessed" if blessing["blessed"] else "candidate"
    with conn, conn.cursor() as cur:
        cur.execute(
            "insert into model_versions (model_version, stage, model_uri, blessed, evaluation, "
            "blessing) values (%s, %s, %s, %s, %s, %s) "
            "on conflict (model_version) do update set model_uri = excluded.model_uri, "
            "blessed = excluded.blessed, evaluation = excluded.evaluation, "
            "blessing = excluded.blessing, updated_at = now(), stage = case "
            "when model_versions.stage in ('production', 'archived') then model_versions.stage "
            "else excluded.stage end",
            (version, stage, model_uri, blessing["blessed"], json.dumps(evaluation),
             json.dumps(blessing)),
        )  # fmt: skip


def production_evaluation(conn, excluding: str | None = None) -> tuple[str, dict] | None:
    """(version, evaluation) of the version now serving, when it has a recorded evaluation
    (and is not `excluding`, the candidate itself); else None."""
    with conn.cursor() as cur:
        cur.execute(
            "select v.model_version, v.evaluation from serving_state s "
            "join model_versions v using (model_version) where v.evaluation is not null"
        )
        row = cur.fetchone()
    conn.rollback()
    if row is None or row[0] == excluding:
        return None
    return row[0], row[1]


def mark_production(cur, version: str) -> None:
    """Record that `version` now serves: it becomes `production`, the previous one `archived`.
    Takes a cursor: it runs inside the transaction that switches serving."""
    cur.execute("update model_versions set stage = 'archived', updated_at = now() "
                "where stage = 'production' and model_version <> %s", (version,))  # fmt: skip
    cur.execute(
        "insert into model_versions (model_version, stage) values (%s, 'production') "
        "on conflict (model_version) do update set stage = 'production', updated_at = now()",
        (version,),
    )
