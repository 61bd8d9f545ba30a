"""Model versions in the registry: evaluations recorded, the version in production found."""

import pytest

from swiperec.registry.versions import production_evaluation, record_evaluation

pytestmark = pytest.mark.integration


def evaluation(auc):
    return {"classification": {"model": {"like_vs_all": {"roc_auc": auc}}}, "curves": {"x": 1}}


def stage(conn, version):
    with conn.cursor() as cur:
        cur.execute("select stage from model_versions where model_version = %s", (version,))
        row = cur.fetchone()
    conn.rollback()
    return row[0] if row else None


def test_evaluations_are_recorded_and_production_is_the_serving_version(conn):
    from swiperec.registry.versions import mark_production

    record_evaluation(conn, "v1", "/models/v1", evaluation(0.7), {"blessed": True})
    record_evaluation(conn, "v2", "/models/v2", evaluation(0.6), {"blessed": False})
    assert stage(conn, "v1") == "blessed" and stage(conn, "v2") == "candidate"
    assert production_evaluation(conn) is None  # nothing serves yet
    with conn, conn.cursor() as cur:
        cur.execute("insert into serving_state (model_version) values ('v1')")
        mark_production(cur, "v1")
    version, recorded = production_evaluation(conn)
    assert version == "v1" and recorded["classification"]["model"]["like_vs_all"]["roc_auc"] == 0.7
    assert "curves" not in recorded  # plots stay in the evaluation's own files
    assert production_evaluation(conn, excluding="v1") is None
    # Re-evaluating the version in production keeps its stage.
    record_evaluation(conn, "v1", "/models/v1", evaluation(0.71), {"blessed": False})
    assert stage(conn, "v1") == "production"
    with conn, conn.cursor() as cur:
        cur.execute("update serving_state set model_version = 'v2'")
        mark_production(cur, "v2")
    assert stage(conn, "v1") == "archived" and stage(conn, "v2") == "production"
