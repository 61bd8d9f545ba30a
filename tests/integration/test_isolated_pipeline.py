"""The committed pipeline YAML, run as a cluster runs it: each step alone with its declared inputs.

`isolated_pipeline.run_isolated` gives every step a fresh folder holding copies of only the
artifacts it declares, and deletes the folder when the step ends, like a Kubeflow or Vertex pod.
A step that opens a path recorded inside an earlier artifact passes under KFP's local runner
(one shared filesystem) but fails here, as it would on a cluster.

A second run goes at the same moment on the same database: the installed `swiperec pipeline
run --local`, with a blessing no model passes. Both complete; the blessed one serves, the other
changes nothing that serves.

The tiny synthetic data set and one-epoch tiny models keep the two runs to about 100 s on 2
cores (mostly TensorFlow and Beam starting up in every step); the toy pipeline that checks the
harness itself takes about a second.
"""

import json
import re
import threading

import pytest
from kfp import compiler, dsl

from swiperec.pipeline.run import COMPILED, check_arguments
from tests.conftest import SMALL_TRAIN, TINY_DATA
from tests.integration.isolated_pipeline import IsolatedStepError, run_isolated

pytestmark = pytest.mark.integration

# The pipeline image's environment (images/pipeline.Dockerfile).
STEP_ENV = {
    "PYTHONUNBUFFERED": "1",
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
STEPS = ["ingest-snapshot", "feature-transform", "train", "evaluate", "write-embeddings",
         "register"]  # fmt: skip
# A one-epoch tiny model is no good: bless it anyway, so that every step runs.
PERMISSIVE = {
    "min_auc": 0.0,
    "min_share_of_achievable_auc": 0.0,
    "must_beat_popularity": False,
    "max_auc_drop": 1.0,
    "max_recall_drop": 1.0,
    "max_mean_cosine": 1.0,
    "max_near_duplicate_rate": 1.0,
}


NOT_BLESSED = "v-not-blessed"


@pytest.fixture(scope="module")
def isolated(pg_server, installed, tmp_path_factory):
    """(run, connection, version, the other run) of one isolated run of the committed pipeline
    on the tiny data set, in a database of its own, and of the installed command's run of it
    (`NOT_BLESSED`, a blessing no model passes; its `CompletedProcess`) started at the same
    moment on the same database.

    (That a blessed run archives the version it replaces is checked in test_registry.py and
    test_embedding_store.py; here the database serves nothing before the runs.)"""
    from swiperec.data.load import load_synthetic
    from swiperec.data.synthetic import generate
    from swiperec.db import connect
    from tests.conftest import fresh_database

    url = fresh_database(pg_server, "isolated_pipeline")
    conn = connect(url)
    load_synthetic(conn, generate(TINY_DATA))
    version = "v-isolated"
    tiny = {"epochs": 1, "train_config_json": json.dumps(SMALL_TRAIN.to_dict())}
    arguments = check_arguments({
        **tiny,
        "model_version": version,
        "thresholds_json": json.dumps(PERMISSIVE),
        "activate": True,
        "database_url": url,
    })  # fmt: skip
    root = tmp_path_factory.mktemp("isolated")
    env = {**installed.env(root / "home"), "DATABASE_URL": url}
    other = {}

    def run_other():
        parameters = {**tiny, "thresholds_json": '{"min_auc": 0.99}', "model_version": NOT_BLESSED}
        try:
            other["run"] = installed.run(
                env, "pipeline", "run", "--local", "--root", str(root / "other"),
                *(arg for name, value in parameters.items()
                  for arg in ("--param", f"{name}={value}")),
            )  # fmt: skip
        except BaseException as error:  # e.g. its timeout: the test says so
            other["error"] = error

    thread = threading.Thread(target=run_other)
    thread.start()
    try:
        run = run_isolated(COMPILED, arguments, root / "store", root / "work", STEP_ENV)
    finally:
        thread.join(900)
    assert not thread.is_alive(), "the installed command's run did not end"
    assert "run" in other, f"the installed command's run failed: {other.get('error')!r}"
    yield run, conn, version, other["run"]
    conn.close()


def test_every_step_reads_only_its_declared_inputs_and_the_version_serves(isolated):
    from swiperec.serving.recommend import recommend

    run, conn, version, _ = isolated
    assert run.tasks == STEPS, run.tasks
    assert run.outputs["evaluate"]["blessed"] is True
    assert run.pipeline_outputs["Output"] == version
    with conn.cursor() as cur:
        cur.execute("select model_version from serving_state")
        assert cur.fetchone()[0] == version
        cur.execute("select kind, state, row_count from embedding_sets where model_version = %s "
                    "order by kind", (version,))  # fmt: skip
        sets = cur.fetchall()
        cur.execute("select count(*) from videos")
        videos = cur.fetchone()[0]
        cur.execute("select count(distinct user_id) from user_video_decisions")
        users = cur.fetchone()[0]
        cur.execute("select user_id from user_video_decisions group by user_id "
                    "order by count(*) desc limit 1")  # fmt: skip
        user = str(cur.fetchone()[0])
    conn.rollback()
    assert sets == [("user", "ready", users), ("video", "ready", videos)]
    recommendations = recommend(conn, user, k=10)
    assert len(recommendations) == 10
    assert {(r.model_version, r.source) for r in recommendations} == {(version, "embedding")}


def test_the_lineage_records_every_artifact_each_step_opened(isolated):
    """Isolated, a step can open only the artifacts it declares (the test above); so each
    execution's recorded inputs must be exactly its component's declared input artifacts."""
    import yaml

    from swiperec.registry.lineage import lineage

    _, conn, version, _ = isolated
    spec = yaml.safe_load(COMPILED.read_text())
    declared = {}  # step -> the input artifacts its component declares
    for name, component in spec["components"].items():
        if "executorLabel" in component:
            step = name.removeprefix("comp-").removesuffix("-2").replace("-", "_")
            declared[step] = set(component.get("inputDefinitions", {}).get("artifacts", {}))
    found = lineage(conn, version)
    types = {id_: artifact["type"] for id_, artifact in found["artifacts"].items()}
    recorded = {e["step"]: {types[i] for i in e["inputs"]} for e in found["executions"]}
    assert list(recorded) == [s.replace("-", "_") for s in STEPS]
    assert recorded == declared
    assert recorded["evaluate"] == {"model", "examples", "transform_graph", "snapshot"}
    assert recorded["write_embeddings"] == {"model", "snapshot"}
    # Each execution carries its own step's parameters, stamped by the step itself.
    parameters = {e["step"]: e["parameters"] for e in found["executions"]}
    assert parameters["train"]["epochs"] == 1
    assert parameters["evaluate"]["thresholds"] == PERMISSIVE
    assert parameters["feature_transform"]["negatives_per_positive"] == 2.0


def test_two_runs_at_once_the_blessed_one_serves_the_other_changes_nothing(isolated):
    """The fixture's two runs, on one database at the same moment: the isolated run, with a
    blessing any model passes, and the installed command's, with one no model passes. Both
    complete and record their own version and lineage; the blessed one serves, the one that is
    not blessed has only its evaluation recorded and changed nothing that serves."""
    from swiperec.registry.lineage import lineage, show_version

    _, conn, blessed, other = isolated
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert "not blessed: AUC" in other.stdout
    assert not re.search(r"^  write-embeddings", other.stdout, re.M)
    stages = {v: show_version(conn, v)["stage"] for v in (blessed, NOT_BLESSED)}
    assert stages == {blessed: "production", NOT_BLESSED: "candidate"}
    with conn.cursor() as cur:
        cur.execute("select model_version from serving_state")
        assert cur.fetchone()[0] == blessed
        cur.execute("select count(*) from embedding_sets where model_version = %s",
                    (NOT_BLESSED,))  # fmt: skip
        assert cur.fetchone()[0] == 0
    conn.rollback()
    found = {v: lineage(conn, v) for v in (blessed, NOT_BLESSED)}
    assert found[blessed]["run_id"] != found[NOT_BLESSED]["run_id"]
    unblessed_steps = [s for s in STEPS if s != "write-embeddings"]
    for version, steps in ((blessed, STEPS), (NOT_BLESSED, unblessed_steps)):
        executions = found[version]["executions"]
        assert [e["step"] for e in executions] == [s.replace("-", "_") for s in steps]
        assert {e["run_id"] for e in executions} == {found[version]["run_id"]}
    # They did run at once: their spans overlap.
    starts = [min(e["started_at"] for e in f["executions"]) for f in found.values()]
    ends = [max(e["finished_at"] for e in f["executions"]) for f in found.values()]
    assert max(starts) < min(ends)


# -- the harness itself: a toy pipeline whose second step either reads the artifact it declares
# or opens a path the first step recorded in another artifact's metadata --------------------


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def produce(data: dsl.Output[dsl.Dataset], note: dsl.Output[dsl.Artifact]):
    with open(data.path, "w") as handle:
        handle.write("hello")
    with open(note.path, "w") as handle:
        handle.write("see metadata")
    note.metadata["data_path"] = data.path


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def read_declared(data: dsl.Input[dsl.Dataset]) -> str:
    with open(data.path) as handle:
        return handle.read()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def read_recorded(note: dsl.Input[dsl.Artifact]) -> str:
    with open(note.metadata["data_path"]) as handle:
        return handle.read()


@dsl.pipeline(name="isolation-check")
def isolation_check(leak: bool = False):
    made = produce()
    with dsl.If(leak == True, name="leaky"):  # noqa: E712 - a KFP condition
        read_recorded(note=made.outputs["note"])
    with dsl.Else(name="clean"):
        read_declared(data=made.outputs["data"])


def test_the_harness_fails_a_step_that_opens_a_recorded_path(tmp_path):
    package = tmp_path / "isolation_check.yaml"
    compiler.Compiler().compile(isolation_check, str(package))

    clean = run_isolated(package, {"leak": False}, tmp_path / "store", tmp_path / "clean")
    assert clean.tasks == ["produce", "read-declared"]
    assert clean.outputs["read-declared"]["Output"] == "hello"
    assert [p.name for p in (tmp_path / "clean").iterdir()] == ["logs"]  # step folders are gone

    with pytest.raises(IsolatedStepError, match=r"(?s)'read-recorded'.*No such file"):
        run_isolated(package, {"leak": True}, tmp_path / "store", tmp_path / "leaky")
