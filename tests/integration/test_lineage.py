"""Lineage in the registry: runs recorded as artifacts, executions and events, walked back from a
model version; aliases; content hashes; the `swiperec registry` commands."""

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swiperec.registry.lineage import (
    Artifact,
    Execution,
    RegistryError,
    content_hash,
    lineage,
    list_versions,
    record_run,
    resolve,
    set_alias,
    show_version,
)
from swiperec.registry.versions import mark_production, record_evaluation

pytestmark = pytest.mark.integration

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
STEPS = [
    "ingest_snapshot", "feature_transform", "train", "evaluate", "write_embeddings", "register",
]  # fmt: skip
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def write_files(folder: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(folder)


def make_snapshot(root: Path) -> Artifact:
    uri = write_files(root / "snapshot", {
        "videos.parquet": "videos", "reviews.parquet": "reviews",
        "decisions.parquet": "decisions", "metadata.json": '{"cutoff": "2026-10-01"}',
    })  # fmt: skip
    return Artifact("snapshot", uri, content_hash(uri), {
        "cutoff": "2026-10-01T00:00:00+00:00",
        "row_counts": {"videos": 400, "reviews": 600, "decisions": 1500},
    })  # fmt: skip


def make_run(root: Path, version: str, snapshot: Artifact | None = None, ingest="complete"):
    """The six executions of a training pipeline run, over real folders under `root`."""
    snapshot = snapshot or make_snapshot(root)
    graph_uri = write_files(root / "transform", {"video/saved_model.pb": "g1", "user/v.txt": "u"})
    examples_uri = write_files(root / "examples", {"train/part-0.gz": version, "test/p.gz": "t"})
    model_uri = write_files(root / "model", {"model_card.json": version, "user_tower/w": "w"})
    eval_uri = write_files(root / "evaluation", {"evaluation.json": "{}"})
    graph = Artifact("transform_graph", graph_uri, content_hash(graph_uri))
    examples = Artifact("examples", examples_uri, content_hash(examples_uri), {"train": 1200})
    model = Artifact("model", model_uri, content_hash(model_uri), {"epochs_run": 4})
    evaluation = Artifact("evaluation", eval_uri, content_hash(eval_uri), {"blessed": True})
    # The same artifact named again with more metadata (merged into one row).
    registered = Artifact("evaluation", eval_uri, evaluation.content_hash, {"registered": True})
    embedding_set = Artifact("embedding_set", f"pgvector://embedding_sets/{version}", None,
                             {"rows": {"video": 400, "user": 60}})  # fmt: skip

    def at(minutes):
        return START + timedelta(minutes=minutes)

    return [
        Execution("ingest_snapshot", {"cutoff": "2026-10-01"}, outputs=(snapshot,),
                  state=ingest, started_at=at(0), finished_at=at(1)),
        Execution("feature_transform", {"pseudo_user_weight": 0.5}, inputs=(snapshot,),
                  outputs=(graph, examples), started_at=at(1), finished_at=at(5)),
        Execution("train", {"epochs": 20, "learning_rate": 0.001}, inputs=(graph, examples),
                  outputs=(model,), started_at=at(5), finished_at=at(9)),
        Execution("evaluate", {"min_auc": 0.6}, inputs=(model, examples), outputs=(evaluation,),
                  started_at=at(9), finished_at=at(10)),
        Execution("write_embeddings", {"version": version}, inputs=(model, snapshot),
                  outputs=(embedding_set,), started_at=at(10), finished_at=at(12)),
        Execution("register", {"version": version}, inputs=(model, registered, embedding_set),
                  started_at=at(12), finished_at=at(12)),
    ]  # fmt: skip


def counts(conn) -> dict:
    tables = ("lineage_artifacts", "lineage_executions", "lineage_events", "model_versions",
              "model_version_aliases")  # fmt: skip
    with conn.cursor() as cur:
        found = {}
        for table in tables:
            cur.execute(f"select count(*) from {table}")
            found[table] = cur.fetchone()[0]
    conn.rollback()
    return found


def by_type(found: dict) -> dict:
    return {a["type"]: i for i, a in found["artifacts"].items()}


def test_a_recorded_run_is_walked_from_snapshot_to_embedding_set(conn, tmp_path):
    executions = make_run(tmp_path, "v7")
    added = record_run(conn, "run-42", executions, model_version="v7")
    assert added == {"run_id": "run-42", "executions": 6, "artifacts": 6, "events": 16}

    found = lineage(conn, "v7")
    assert found["version"] == "v7" and found["run_id"] == "run-42"
    assert [e["step"] for e in found["executions"]] == STEPS
    ids = by_type(found)
    assert set(ids) == {"snapshot", "transform_graph", "examples", "model", "evaluation",
                        "embedding_set"}  # fmt: skip
    assert found["model_artifact"] == ids["model"]
    events = {e["step"]: (e["inputs"], e["outputs"]) for e in found["executions"]}

    def named(*types):
        return sorted(ids[t] for t in types)

    assert events == {
        "ingest_snapshot": ([], named("snapshot")),
        "feature_transform": (named("snapshot"), named("transform_graph", "examples")),
        "train": (named("transform_graph", "examples"), named("model")),
        "evaluate": (named("model", "examples"), named("evaluation")),
        "write_embeddings": (named("model", "snapshot"), named("embedding_set")),
        "register": (named("model", "evaluation", "embedding_set"), []),
    }
    snapshot = found["artifacts"][ids["snapshot"]]
    assert snapshot["uri"] == executions[0].outputs[0].uri
    assert snapshot["content_hash"].startswith("sha256:")
    assert snapshot["metadata"]["row_counts"]["decisions"] == 1500
    train = found["executions"][2]
    assert train["parameters"] == {"epochs": 20, "learning_rate": 0.001}
    assert train["state"] == "complete" and train["started_at"] == START + timedelta(minutes=5)
    assert found["artifacts"][ids["embedding_set"]]["content_hash"] is None
    assert found["artifacts"][ids["evaluation"]]["metadata"] == {
        "blessed": True,
        "registered": True,
    }
    assert found["serving"] == {"now": False, "embedding_set": ids["embedding_set"], "sets": {}}

    # The version row points at the run and its model; `latest` moved to it.
    shown = show_version(conn, "v7")
    assert shown["stage"] == "candidate" and shown["run_id"] == "run-42"
    assert shown["model_artifact_id"] == ids["model"]
    assert shown["model_uri"] == executions[2].outputs[0].uri
    assert shown["aliases"] == ["latest"] and resolve(conn, "latest") == "v7"

    # Once its embeddings serve, the lineage says so; the stage comes from activation.
    with conn, conn.cursor() as cur:
        cur.execute("insert into serving_state (model_version) values ('v7')")
        mark_production(cur, "v7")
    assert lineage(conn, "v7")["serving"]["now"] is True
    record_run(conn, "run-42", executions, model_version="v7")
    assert show_version(conn, "v7")["stage"] == "production"  # re-recording keeps the stage


def test_recording_the_same_run_again_adds_nothing_and_merges_metadata(conn, tmp_path):
    executions = make_run(tmp_path, "v1")
    record_run(conn, "run-1", executions, model_version="v1")
    before = counts(conn)
    again = record_run(conn, "run-1", executions, model_version="v1")
    assert again == {"run_id": "run-1", "executions": 0, "artifacts": 0, "events": 0}
    assert counts(conn) == before

    # Metadata learned later is merged into the same artifact; a re-run step is updated.
    snapshot = executions[0].outputs[0]
    richer = Artifact(snapshot.type, snapshot.uri, snapshot.content_hash, {"taken_by": "ci"})
    ingest = Execution("ingest_snapshot", {"cutoff": "2026-10-02"}, outputs=(richer,),
                       state="failed")  # fmt: skip
    assert record_run(conn, "run-1", [ingest])["artifacts"] == 0
    assert counts(conn) == before
    found = lineage(conn, "v1")
    metadata = found["artifacts"][by_type(found)["snapshot"]]["metadata"]
    assert metadata["taken_by"] == "ci" and metadata["row_counts"]["videos"] == 400
    [step] = [e for e in found["executions"] if e["step"] == "ingest_snapshot"]
    assert step["state"] == "failed" and step["parameters"] == {"cutoff": "2026-10-02"}


def test_two_runs_sharing_a_snapshot_share_one_artifact(conn, tmp_path):
    snapshot = make_snapshot(tmp_path)
    record_run(conn, "run-1", make_run(tmp_path / "r1", "v1", snapshot), model_version="v1")
    # Run 2 reuses the snapshot: its ingest step is skipped and outputs the same artifact.
    run2 = make_run(tmp_path / "r2", "v2", snapshot, ingest="skipped")
    record_run(conn, "run-2", run2, model_version="v2")
    with conn.cursor() as cur:
        cur.execute("select type, count(*) from lineage_artifacts group by type")
        per_type = dict(cur.fetchall())
    conn.rollback()
    assert per_type == {"snapshot": 1, "transform_graph": 2, "examples": 2, "model": 2,
                        "evaluation": 2, "embedding_set": 2}  # fmt: skip
    first, second = lineage(conn, "v1"), lineage(conn, "v2")
    assert by_type(first)["snapshot"] == by_type(second)["snapshot"]
    assert by_type(first)["model"] != by_type(second)["model"]
    # Each version's walk stays in its own run where that run wrote the artifact.
    assert {e["run_id"] for e in second["executions"]} == {"run-2"}
    assert second["executions"][0]["state"] == "skipped"
    assert resolve(conn, "latest") == "v2"

    # A run without an ingest step reaches the run that wrote the snapshot.
    run3 = make_run(tmp_path / "r3", "v3", snapshot)[1:]
    record_run(conn, "run-3", run3, model_version="v3")
    third = lineage(conn, "v3")
    writers = [(e["run_id"], e["step"]) for e in third["executions"] if e["step"] == STEPS[0]]
    assert writers == [("run-1", "ingest_snapshot"), ("run-2", "ingest_snapshot")]


def test_aliases_move_and_resolve(conn, tmp_path):
    record_run(conn, "run-1", make_run(tmp_path / "r1", "v1"), model_version="v1")
    record_run(conn, "run-2", make_run(tmp_path / "r2", "v2"), model_version="v2")
    set_alias(conn, "champion", "v1")
    assert resolve(conn, "champion") == "v1" and resolve(conn, "latest") == "v2"
    set_alias(conn, "champion", "v2")
    assert resolve(conn, "champion") == "v2" and resolve(conn, "v1") == "v1"
    assert show_version(conn, "v2")["aliases"] == ["champion", "latest"]
    assert show_version(conn, "v1")["aliases"] == []

    with pytest.raises(RegistryError, match="no model version 'v9'"):
        set_alias(conn, "champion", "v9")
    with pytest.raises(RegistryError, match="neither a model version nor an alias"):
        resolve(conn, "nobody")
    with pytest.raises(RegistryError, match="is a model version"):
        set_alias(conn, "v1", "v2")
    with pytest.raises(ValueError, match="without spaces"):
        set_alias(conn, "my alias", "v2")
    with pytest.raises(RegistryError, match="no model version"):
        show_version(conn, "v9")
    with pytest.raises(RegistryError, match="no model version"):
        lineage(conn, "v9")
    assert resolve(conn, "champion") == "v2"  # the refused calls changed nothing


def test_versions_without_lineage_and_the_list(conn, tmp_path):
    results = json.loads((TESTDATA / "evaluation_results.json").read_text())
    blessing = {"blessed": False, "reasons": ["AUC 0.52 below 0.6"]}
    record_evaluation(conn, "v0", "/models/v0", results, blessing)  # evaluated, never recorded
    with pytest.raises(RegistryError, match="no recorded lineage"):
        lineage(conn, "v0")
    record_run(conn, "run-1", make_run(tmp_path, "v1"), model_version="v1")
    record_evaluation(conn, "v1", "/ignored", results, {"blessed": True, "reasons": []})

    listed = {row["version"]: row for row in list_versions(conn)}
    assert list(listed) == ["v1", "v0"]  # newest first
    assert listed["v0"]["metrics"] == {"auc": 0.520919, "recall@50": 0.243651}
    assert listed["v0"]["run_id"] is None and listed["v0"]["aliases"] == []
    assert listed["v1"]["stage"] == "blessed" and listed["v1"]["run_id"] == "run-1"
    assert listed["v1"]["aliases"] == ["latest"] and not listed["v1"]["serving"]

    shown = show_version(conn, "v0")
    assert shown["blessing"] == {"blessed": False, "reasons": ["AUC 0.52 below 0.6"]}
    assert shown["evaluation"]["oracle_auc"] == 0.759259
    assert shown["evaluation"]["share_of_achievable_auc"] == 0.080688
    assert "curves" not in shown["evaluation"]


def test_bad_runs_are_refused_and_write_nothing(conn, tmp_path):
    executions = make_run(tmp_path, "v1")
    before = counts(conn)
    odd = Artifact("dataset", "/data")
    with pytest.raises(ValueError, match="unknown artifact type 'dataset'"):
        record_run(conn, "run-1", [Execution("ingest_snapshot", {}, outputs=(odd,))])
    with pytest.raises(ValueError, match="exactly one 'model' artifact"):
        record_run(conn, "run-1", executions[:2], model_version="v1")
    with pytest.raises(ValueError, match="duplicate step names train"):
        record_run(conn, "run-1", [*executions, executions[2]])
    with pytest.raises(ValueError, match="state 'done'"):
        record_run(conn, "run-1", [Execution("train", {}, state="done")])
    with pytest.raises(ValueError, match="parameters of step 'train'"):
        record_run(conn, "run-1", [Execution("train", {"x": object()})])
    assert counts(conn) == before

    # A version belongs to one run; the refused run leaves no rows behind.
    record_run(conn, "run-1", executions, model_version="v1")
    before = counts(conn)
    with pytest.raises(RegistryError, match="registered by run 'run-1'"):
        record_run(conn, "run-2", make_run(tmp_path / "r2", "v1"), model_version="v1")
    assert counts(conn) == before


def test_content_hash_is_stable_and_follows_the_content(tmp_path):
    folder = Path(write_files(tmp_path / "model", {"a.txt": "one", "sub/b.bin": "two"}))
    first = content_hash(str(folder))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert content_hash(str(folder)) == first
    copy = write_files(tmp_path / "copy", {"sub/b.bin": "two", "a.txt": "one"})
    assert content_hash(copy) == first  # the tree, not where it is or the order it was written

    (folder / "sub" / "b.bin").write_text("three")
    changed = content_hash(str(folder))
    assert changed != first
    (folder / "sub" / "b.bin").write_text("two")
    assert content_hash(str(folder)) == first
    (folder / "sub" / "b.bin").rename(folder / "sub" / "c.bin")
    assert content_hash(str(folder)) not in (first, changed)  # a renamed file changes it too

    single = folder / "a.txt"
    assert content_hash(str(single)) == (
        "sha256:7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
    )  # sha256 of the file's bytes, as `sha256sum` gives it
    with pytest.raises(FileNotFoundError):
        content_hash(str(tmp_path / "missing"))


def test_the_gs_code_path_hashes_like_the_local_one(tmp_path):
    from swiperec.registry.lineage import _hash_with_gfile

    folder = write_files(tmp_path / "tree", {"x/1.txt": "a", "2.txt": "bb", "x/y/3": "ccc"})
    assert _hash_with_gfile(folder) == content_hash(folder)  # tf.io.gfile on a local path
    assert _hash_with_gfile(folder + "/2.txt") == content_hash(folder + "/2.txt")


def swiperec(*args, db_url, home, check=True):
    env = {**os.environ, "DATABASE_URL": db_url, "SWIPEREC_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "swiperec.cli", "registry", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"swiperec registry {' '.join(args)} failed:\n{result.stderr}")
    return result


def test_registry_commands(conn, db_url, tmp_path):
    home = tmp_path / "home"
    assert "no model versions yet" in swiperec("list", db_url=db_url, home=home).stdout
    executions = make_run(tmp_path / "r1", "v7")
    record_run(conn, "run-42", executions, model_version="v7")
    results = json.loads((TESTDATA / "evaluation_results.json").read_text())
    record_evaluation(conn, "v7", executions[2].outputs[0].uri, results,
                      {"blessed": False, "reasons": ["AUC 0.521 is below 0.6"]})  # fmt: skip
    with conn, conn.cursor() as cur:
        cur.execute("insert into serving_state (model_version) values ('v7')")

    listed = swiperec("list", db_url=db_url, home=home).stdout.splitlines()
    assert listed[0].split()[:5] == ["version", "stage", "blessed", "AUC", "R@50"]
    assert listed[1].split()[:6] == ["v7", "candidate", "no", "0.521", "0.244", "run-42"]
    assert listed[1].endswith("latest  <- serving")

    shown = swiperec("show", "latest", db_url=db_url, home=home).stdout
    assert "version       v7" in shown and "run           run-42" in shown
    assert "AUC like vs all 0.521 (popularity 0.549, oracle 0.759)" in shown
    assert "blessing      failed" in shown and "- AUC 0.521 is below 0.6" in shown

    moved = swiperec("alias", "champion", "latest", db_url=db_url, home=home).stdout
    assert moved.strip() == "alias         champion -> v7"

    text = swiperec("lineage", "champion", db_url=db_url, home=home).stdout
    lines = text.splitlines()
    assert lines[0] == "model version v7  (run run-42, serving now)"
    steps = [m.group(1) for m in map(re.compile(r"  (\w+)  \[").match, lines) if m]
    assert steps == STEPS
    snapshot_line = next(line for line in lines if "-> snapshot #" in line)
    assert executions[0].outputs[0].uri in snapshot_line
    assert "cutoff 2026-10-01T00:00:00+00:00" in snapshot_line
    assert "row_counts videos=400 reviews=600 decisions=1500" in snapshot_line
    train = next(line for line in lines if line.startswith("  train "))
    assert "(epochs 20, learning_rate 0.001)" in train
    assert "blessed yes" in next(line for line in lines if "-> evaluation #" in line)
    embedding_line = next(line for line in lines if "-> embedding_set #" in line)
    assert "rows user=60 video=400" in embedding_line and embedding_line.endswith("[serving now]")

    as_json = json.loads(swiperec("lineage", "v7", "--json", db_url=db_url, home=home).stdout)
    assert as_json == json.loads(json.dumps(lineage(conn, "v7"), default=lambda v: v.isoformat()))
    assert [e["step"] for e in as_json["executions"]] == STEPS

    missing = swiperec("show", "v9", db_url=db_url, home=home, check=False)
    assert missing.returncode == 2
    assert "error: 'v9' is neither a model version nor an alias" in missing.stderr
    refused = swiperec("alias", "v7", "latest", db_url=db_url, home=home, check=False)
    assert refused.returncode == 2 and "is a model version" in refused.stderr


@pytest.mark.parametrize("second", ["record_run", "record_evaluation"])
def test_two_runs_registering_one_version_at_once_exactly_one_owns_it(
    second, db_url, conn, tmp_path
):
    """Run A has claimed the version in a transaction still open when run B registers the same
    name (through `record_run`, or through the evaluator): B waits for A, then is refused;
    B's executions are not recorded and it never becomes the owner."""
    import threading
    import time

    from swiperec.db import connect
    from swiperec.registry.versions import VersionTaken, claim_version

    results = json.loads((TESTDATA / "evaluation_results.json").read_text())
    executions = make_run(tmp_path / "b", "v-race")
    first, other = connect(db_url), connect(db_url)
    outcome = {}

    def register_b():
        try:
            if second == "record_run":
                record_run(other, "run-b", executions, model_version="v-race")
            else:
                record_evaluation(other, "v-race", "/models/b", results,
                                  {"blessed": True, "reasons": []}, run_id="run-b")  # fmt: skip
            outcome["b"] = "owner"
        except VersionTaken as err:
            outcome["b"] = str(err)

    with first.cursor() as cur:
        claim_version(cur, "v-race", "run-a")  # not committed yet
    racer = threading.Thread(target=register_b)
    racer.start()
    waiting, deadline = None, time.monotonic() + 30
    while waiting != "Lock" and time.monotonic() < deadline:
        with conn.cursor() as cur:
            cur.execute("select wait_event_type from pg_stat_activity where pid = %s",
                        (other.get_backend_pid(),))  # fmt: skip
            waiting = (cur.fetchone() or (None,))[0]
        conn.rollback()
        time.sleep(0.02)
    assert waiting == "Lock" and racer.is_alive(), "run B did not wait for run A's claim"
    first.commit()
    racer.join(30)
    first.close()
    other.close()
    assert "is registered by run 'run-a'" in outcome["b"]
    with conn.cursor() as cur:
        cur.execute("select run_id, evaluation from model_versions where model_version = 'v-race'")
        assert cur.fetchone() == ("run-a", None)
        cur.execute("select count(*) from lineage_executions where run_id = 'run-b'")
        assert cur.fetchone()[0] == 0
    conn.rollback()
