"""Lineage of model versions (ML Metadata's model: artifacts, executions, events) and aliases.

    snapshot = Artifact("snapshot", snap_uri, content_hash(snap_uri), {"cutoff": "2026-10-01"})
    model = Artifact("model", model_uri, content_hash(model_uri))
    record_run(conn, "run-42", [
        Execution("ingest_snapshot", {"cutoff": "2026-10-01"}, outputs=(snapshot,)),
        Execution("feature_transform", params, inputs=(snapshot,), outputs=(graph, examples)),
        Execution("train", {"epochs": 20}, inputs=(graph, examples), outputs=(model,)),
        ...
    ], model_version="v7")                 # v7 -> run-42 and its model; alias `latest` -> v7
    lineage(conn, resolve(conn, "latest"))  # which data, transform and run made v7, and more

An artifact is identified by (type, uri, content_hash): the same snapshot read by two runs is
one artifact. An execution is one step of one run, unique per (run_id, step); recording a run
again updates its executions and adds nothing. The walk goes upstream from the version's model
artifact through the executions that wrote each artifact (those of the version's own run when
there are any) and one step downstream, to the executions that read the model (evaluate,
write_embeddings) and what they wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePath

from swiperec.registry.versions import RegistryError, claim_version

ARTIFACT_TYPES = (
    "snapshot", "transform_graph", "examples", "model", "evaluation", "embedding_set",
)  # fmt: skip
EXECUTION_STATES = ("complete", "failed", "skipped")
LATEST = "latest"  # the alias that moves to each version `record_run` registers

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """Something a step read or wrote. `type` is one of ARTIFACT_TYPES."""

    type: str
    uri: str
    content_hash: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str | None]:
        return self.type, self.uri, self.content_hash


@dataclass(frozen=True)
class Execution:
    """One step of a run: e.g. ingest_snapshot, feature_transform, train, evaluate,
    write_embeddings, register."""

    step: str
    parameters: dict
    inputs: tuple[Artifact, ...] = ()
    outputs: tuple[Artifact, ...] = ()
    state: str = "complete"
    started_at: datetime | None = None
    finished_at: datetime | None = None


# -- content hashes ------------------------------------------------------------------------------


def content_hash(uri: str) -> str:
    """The "sha256:<hex>" of a file's bytes, or of a folder tree: every file in sorted
    relative-path order, as its path, its size and its bytes. Local paths, and gs:// through
    tf.io.gfile."""
    if uri.startswith("gs://"):
        return _hash_with_gfile(uri)
    if os.path.isfile(uri):
        return _hash_file(uri)
    if not os.path.isdir(uri):
        raise FileNotFoundError(f"nothing to hash at {uri}")
    files = []
    for folder, _, names in os.walk(uri):
        for name in names:
            path = os.path.join(folder, name)
            files.append((PurePath(os.path.relpath(path, uri)).as_posix(), path))
    return _hash_tree(sorted(files), lambda path: open(path, "rb"), os.path.getsize)


def _hash_with_gfile(uri: str) -> str:
    import tensorflow as tf  # only for gs://: TensorFlow takes seconds to import

    gfile = tf.io.gfile
    if not gfile.exists(uri):
        raise FileNotFoundError(f"nothing to hash at {uri}")
    if not gfile.isdir(uri):
        return _hash_file(uri, lambda path: gfile.GFile(path, "rb"))
    root = uri.rstrip("/") + "/"
    files = []
    for folder, _, names in gfile.walk(uri):
        for name in names:
            path = folder.rstrip("/") + "/" + name
            files.append((path[len(root) :], path))
    return _hash_tree(
        sorted(files), lambda path: gfile.GFile(path, "rb"), lambda path: gfile.stat(path).length
    )


def _hash_file(path: str, open_file=None) -> str:
    digest = hashlib.sha256()
    with (open_file or (lambda p: open(p, "rb")))(path) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _hash_tree(files: list[tuple[str, str]], open_file, size) -> str:
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(f"{relative}\0{size(path)}\0".encode())
        with open_file(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# -- recording a run -----------------------------------------------------------------------------


def _to_json(value, what: str) -> str:
    def default(obj):
        if isinstance(obj, datetime | date):
            return obj.isoformat()
        if isinstance(obj, PurePath):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, default=default, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: {err}") from err


def _validate(run_id: str, executions: list[Execution], model_version: str | None) -> None:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValueError("run_id must be a non-empty string")
    if not executions:
        raise ValueError(f"run {run_id!r}: no executions to record")
    steps = [e.step for e in executions]
    duplicates = sorted({s for s in steps if steps.count(s) > 1})
    if duplicates:
        raise ValueError(f"run {run_id!r}: duplicate step names {', '.join(duplicates)}")
    for execution in executions:
        if not isinstance(execution, Execution):
            raise ValueError(f"run {run_id!r}: expected Execution, got {execution!r}")
        if not execution.step or not execution.step.strip():
            raise ValueError(f"run {run_id!r}: an execution has an empty step name")
        if execution.state not in EXECUTION_STATES:
            raise ValueError(
                f"step {execution.step!r}: state {execution.state!r} is not one of "
                f"{', '.join(EXECUTION_STATES)}"
            )
        for artifact in (*execution.inputs, *execution.outputs):
            if artifact.type not in ARTIFACT_TYPES:
                raise ValueError(
                    f"step {execution.step!r}: unknown artifact type {artifact.type!r} "
                    f"(one of {', '.join(ARTIFACT_TYPES)})"
                )
            if not artifact.uri or not artifact.uri.strip():
                raise ValueError(f"step {execution.step!r}: a {artifact.type} artifact has no uri")
    if model_version is not None:
        if not model_version.strip():
            raise ValueError("model_version must be a non-empty string")
        _model_output(run_id, executions)


def _model_output(run_id: str, executions: list[Execution]) -> Artifact:
    models = {a.key: a for e in executions for a in e.outputs if a.type == "model"}
    if len(models) != 1:
        found = "no" if not models else f"{len(models)}"
        raise ValueError(
            f"run {run_id!r}: a model version needs exactly one 'model' artifact among the "
            f"executions' outputs; found {found}"
        )
    return next(iter(models.values()))


def record_run(
    conn, run_id: str, executions: list[Execution], model_version: str | None = None
) -> dict:
    """Record a run's executions, their artifacts and events in one transaction.

    Artifacts are upserted on (type, uri, content_hash), merging metadata; an execution already
    recorded for (run_id, step) is updated and its events replaced, so recording the same run
    again adds nothing. With `model_version`, that version (created as `candidate` when new,
    else keeping its stage) points at this run and its model artifact, and alias `latest`
    moves to it. Returns the rows this call added: {"run_id", "executions", "artifacts",
    "events"}.
    """
    _validate(run_id, executions, model_version)
    added = {"run_id": run_id, "executions": 0, "artifacts": 0, "events": 0}
    with conn, conn.cursor() as cur:
        metadata: dict[tuple, dict] = {}  # an artifact named twice: its metadata merged
        for execution in executions:
            for artifact in (*execution.inputs, *execution.outputs):
                metadata.setdefault(artifact.key, {}).update(artifact.metadata)
        artifact_ids: dict[tuple, int] = {}
        for key, values in metadata.items():
            artifact_ids[key], new = _upsert_artifact(cur, key, values)
            added["artifacts"] += new
        for execution in executions:
            execution_id, new = _upsert_execution(cur, run_id, execution)
            added["executions"] += new
            wanted = {(artifact_ids[a.key], "input") for a in execution.inputs}
            wanted |= {(artifact_ids[a.key], "output") for a in execution.outputs}
            cur.execute("select artifact_id, kind from lineage_events where execution_id = %s",
                        (execution_id,))  # fmt: skip
            present = set(cur.fetchall())
            for artifact_id, kind in present - wanted:
                cur.execute("delete from lineage_events where execution_id = %s "
                            "and artifact_id = %s and kind = %s",
                            (execution_id, artifact_id, kind))  # fmt: skip
            for artifact_id, kind in sorted(wanted - present):
                cur.execute("insert into lineage_events (execution_id, artifact_id, kind) "
                            "values (%s, %s, %s)", (execution_id, artifact_id, kind))  # fmt: skip
            added["events"] += len(wanted - present)
        if model_version is not None:
            model = _model_output(run_id, executions)
            _register_version(cur, model_version, run_id, model, artifact_ids[model.key])
    return added


def _upsert_artifact(cur, key: tuple, metadata: dict) -> tuple[int, bool]:
    """(id, whether it is new) of the artifact (type, uri, content_hash); a known one gets
    `metadata` merged in (new keys win)."""
    document = _to_json(metadata, f"metadata of {key[0]} {key[1]}")
    cur.execute(
        "insert into lineage_artifacts (type, uri, content_hash, metadata) "
        "values (%s, %s, %s, %s) on conflict do nothing returning id",
        (*key, document),
    )
    row = cur.fetchone()
    if row:
        return row[0], True
    cur.execute(
        "update lineage_artifacts set metadata = metadata || %s::jsonb "
        "where type = %s and uri = %s and content_hash is not distinct from %s returning id",
        (document, *key),
    )
    return cur.fetchone()[0], False


def _upsert_execution(cur, run_id: str, execution: Execution) -> tuple[int, bool]:
    """(id, whether it is new). A recorded (run_id, step) takes the new parameters and state."""
    values = (
        _to_json(execution.parameters, f"parameters of step {execution.step!r}"),
        execution.state, execution.started_at, execution.finished_at, run_id, execution.step,
    )  # fmt: skip
    cur.execute(
        "insert into lineage_executions (parameters, state, started_at, finished_at, run_id, "
        "step) values (%s, %s, %s, %s, %s, %s) on conflict (run_id, step) do nothing "
        "returning id",
        values,
    )
    row = cur.fetchone()
    if row:
        return row[0], True
    cur.execute(
        "update lineage_executions set parameters = %s, state = %s, started_at = %s, "
        "finished_at = %s where run_id = %s and step = %s returning id",
        values,
    )
    return cur.fetchone()[0], False


def finish_execution(conn, run_id: str, step: str, finished_at: datetime) -> None:
    """Move a recorded execution's end to `finished_at`: for a step that records its run before
    its own work is done (`register`, whose promotion follows the recording). Bookkeeping only:
    an execution not recorded is left so, since the step's work is already done."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "update lineage_executions set finished_at = %s where run_id = %s and step = %s",
            (finished_at, run_id, step),
        )


def _register_version(cur, version: str, run_id: str, model: Artifact, artifact_id: int) -> None:
    claim_version(cur, version, run_id)  # VersionTaken when another run owns the name
    cur.execute(
        "update model_versions set model_uri = %s, model_artifact_id = %s, updated_at = now() "
        "where model_version = %s",
        (model.uri, artifact_id, version),
    )
    _move_alias(cur, LATEST, version)


# -- aliases -------------------------------------------------------------------------------------


def _move_alias(cur, alias: str, version: str) -> None:
    cur.execute(
        "insert into model_version_aliases (alias, model_version) values (%s, %s) "
        "on conflict (alias) do update set model_version = excluded.model_version, "
        "updated_at = now()",
        (alias, version),
    )


def set_alias(conn, alias: str, version: str) -> None:
    """Point `alias` at `version` (creating the alias or moving it). An alias may not be named
    like a version: `resolve` would never reach it."""
    if not alias or alias != alias.strip() or any(c.isspace() for c in alias):
        raise ValueError(f"alias {alias!r}: a name without spaces, please")
    with conn, conn.cursor() as cur:
        cur.execute("select 1 from model_versions where model_version = %s", (version,))
        if cur.fetchone() is None:
            raise RegistryError(f"no model version {version!r} (see `swiperec registry list`)")
        cur.execute("select 1 from model_versions where model_version = %s", (alias,))
        if cur.fetchone() is not None:
            raise RegistryError(f"{alias!r} is a model version; an alias needs another name")
        _move_alias(cur, alias, version)


def resolve(conn, name: str) -> str:
    """The version `name` denotes: a version of that name, else the version of that alias."""
    with conn.cursor() as cur:
        cur.execute(
            "select model_version, 0 from model_versions where model_version = %(n)s "
            "union all select model_version, 1 from model_version_aliases where alias = %(n)s "
            "order by 2 limit 1",
            {"n": name},
        )
        row = cur.fetchone()
    conn.rollback()
    if row is None:
        raise RegistryError(
            f"{name!r} is neither a model version nor an alias (see `swiperec registry list`)"
        )
    return row[0]


# -- reading -------------------------------------------------------------------------------------


def _metric(evaluation: dict | None, *path: str):
    value = evaluation or {}
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


_BASELINES = ("popularity", "like_rate", "matrix_factorization")


def _like_vs_nope(evaluation: dict, scorer: str):
    return _metric(evaluation, "classification", scorer, "like_vs_nope", "roc_auc")


def _baseline_metrics(evaluation: dict, name: str) -> dict:
    """A baseline's AUC (likes vs all, likes vs nopes) and Recall@50, keys prefixed by its name."""
    return {
        f"{name}_auc": _metric(evaluation, "classification", name, "like_vs_all", "roc_auc"),
        f"{name}_auc_like_vs_nope": _like_vs_nope(evaluation, name),
        f"{name}_recall@50": _metric(evaluation, "retrieval", name, "recall@50"),
    }


def _key_metrics(evaluation: dict | None) -> dict:
    return {
        "auc": _metric(evaluation, "classification", "model", "like_vs_all", "roc_auc"),
        "recall@50": _metric(evaluation, "retrieval", "model", "recall@50"),
    }


_VERSION_COLUMNS = (
    "v.model_version, v.stage, v.blessed, v.model_uri, v.run_id, v.model_artifact_id, "
    "v.evaluation, v.blessing, v.created_at, v.updated_at, "
    "coalesce(v.model_version = (select model_version from serving_state), false), "
    "coalesce((select array_agg(a.alias order by a.alias) from model_version_aliases a "
    "          where a.model_version = v.model_version), '{}')"
)
_VERSION_NAMES = (
    "version", "stage", "blessed", "model_uri", "run_id", "model_artifact_id", "evaluation",
    "blessing", "created_at", "updated_at", "serving", "aliases",
)  # fmt: skip


def _versions(conn, version: str | None = None) -> list[dict]:
    where = "where v.model_version = %s" if version is not None else ""
    with conn.cursor() as cur:
        cur.execute(
            f"select {_VERSION_COLUMNS} from model_versions v {where} "
            "order by v.created_at desc, v.model_version desc",
            (version,) if version is not None else None,
        )
        rows = [dict(zip(_VERSION_NAMES, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    return rows


def list_versions(conn) -> list[dict]:
    """Every version, newest first: version, stage, blessed, aliases, created_at, serving,
    run_id and the key metrics (model AUC like vs all, recall@50) when evaluated."""
    keys = ("version", "stage", "blessed", "aliases", "created_at", "serving", "run_id")
    return [
        {**{k: row[k] for k in keys}, "metrics": _key_metrics(row["evaluation"])}
        for row in _versions(conn)
    ]


def show_version(conn, version: str) -> dict:
    """One version: its row, aliases, serving, an evaluation summary and the blessing's
    verdict and reasons."""
    rows = _versions(conn, version)
    if not rows:
        raise RegistryError(f"no model version {version!r} (see `swiperec registry list`)")
    row = rows[0]
    evaluation, blessing = row.pop("evaluation"), row.pop("blessing")
    summary = None
    if evaluation is not None:
        summary = {
            **_key_metrics(evaluation),
            "pr_auc": _metric(evaluation, "classification", "model", "like_vs_all", "pr_auc"),
            "ndcg@50": _metric(evaluation, "retrieval", "model", "ndcg@50"),
            "auc_like_vs_nope": _like_vs_nope(evaluation, "model"),
            **{k: v for b in _BASELINES for k, v in _baseline_metrics(evaluation, b).items()},
            "oracle_auc": _metric(evaluation, "classification", "oracle", "like_vs_all", "roc_auc"),
            "share_of_achievable_auc": _metric(
                evaluation, "share_of_achievable_auc", "like_vs_all"
            ),
            "test_start": evaluation.get("test_start"),
            "snapshot_content_hash": evaluation.get("snapshot_content_hash"),
        }
    row["evaluation"] = summary
    row["blessing"] = (
        None if blessing is None
        else {"blessed": blessing.get("blessed"), "reasons": blessing.get("reasons", [])}
    )  # fmt: skip
    row["experiments"] = _experiments_of(conn, version)
    return row


def _experiments_of(conn, version: str) -> list[dict]:
    """The experiments and rollouts `version` was an arm of: name, kind, arm, state, and how it
    ended (when, who or what decided, why)."""
    with conn.cursor() as cur:
        cur.execute(
            "select e.name, e.kind, a.arm, e.state, e.ended_at, e.ended_by, e.end_reason "
            "from experiments e join experiment_arms a on a.experiment = e.name "
            "join serving_routes r on r.route = a.route where r.model_version = %s "
            "and (a.arm <> 'holdout') order by e.started_at",
            (version,),
        )
        keys = ("name", "kind", "arm", "state", "ended_at", "ended_by", "reason")
        found = [dict(zip(keys, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    return found


def lineage(conn, version: str) -> dict:
    """Which data, transform and run produced `version`'s model, and what came of it.

    Returns {"version", "run_id", "model_artifact", "executions", "artifacts", "serving"}:
    executions in time order (id, run_id, step, parameters, state, started_at, finished_at,
    inputs, outputs as artifact ids); artifacts by id (type, uri, content_hash, metadata);
    serving: {"now": serving_state names the version, "embedding_set": its embedding_set
    artifact id or None, "sets": the version's sets in `embedding_sets`, kind -> state}.
    """
    with conn.cursor() as cur:
        cur.execute("select run_id, model_artifact_id from model_versions "
                    "where model_version = %s", (version,))  # fmt: skip
        row = cur.fetchone()
        if row is None:
            conn.rollback()
            raise RegistryError(f"no model version {version!r} (see `swiperec registry list`)")
        run_id, model_id = row
        if model_id is None:
            conn.rollback()
            raise RegistryError(
                f"version {version!r} has no recorded lineage: no pipeline run registered it "
                "(swiperec.registry.lineage.record_run)"
            )
        execution_ids = _upstream(cur, model_id, run_id)
        cur.execute("select execution_id from lineage_events where artifact_id = %s "
                    "and kind = 'input'", (model_id,))  # fmt: skip
        execution_ids |= {r[0] for r in cur.fetchall()}
        executions = _executions(cur, execution_ids)
        artifact_ids = {model_id}
        for execution in executions:
            artifact_ids.update(execution["inputs"], execution["outputs"])
        cur.execute("select id, type, uri, content_hash, metadata from lineage_artifacts "
                    "where id = any(%s) order by id", (sorted(artifact_ids),))  # fmt: skip
        artifacts = {
            r[0]: {"type": r[1], "uri": r[2], "content_hash": r[3], "metadata": r[4]}
            for r in cur.fetchall()
        }
        cur.execute("select coalesce(model_version = %s, false) from serving_state", (version,))
        serving = cur.fetchone()
        cur.execute("select kind, state from embedding_sets where model_version = %s "
                    "order by kind", (version,))  # fmt: skip
        sets = dict(cur.fetchall())
    conn.rollback()
    produced = {a for e in executions for a in e["outputs"]}
    embedding_sets = [
        i for i, a in artifacts.items() if a["type"] == "embedding_set" and i in produced
    ]
    return {
        "version": version,
        "run_id": run_id,
        "model_artifact": model_id,
        "executions": executions,
        "artifacts": artifacts,
        "serving": {
            "now": bool(serving and serving[0]),
            "embedding_set": embedding_sets[-1] if embedding_sets else None,
            "sets": sets,
        },
    }


def _upstream(cur, model_id: int, run_id: str | None) -> set[int]:
    """Ids of the executions upstream of the model artifact: for each artifact, the executions
    that wrote it in `run_id` when there are any, else every execution that wrote it; then
    the inputs of those, and so on."""
    executions: set[int] = set()
    seen, frontier = {model_id}, [model_id]
    while frontier:
        cur.execute(
            "select e.artifact_id, x.id, x.run_id from lineage_events e "
            "join lineage_executions x on x.id = e.execution_id "
            "where e.artifact_id = any(%s) and e.kind = 'output'",
            (frontier,),
        )
        writers: dict[int, list[tuple[int, str]]] = {}
        for artifact_id, execution_id, execution_run in cur.fetchall():
            writers.setdefault(artifact_id, []).append((execution_id, execution_run))
        chosen = set()
        for candidates in writers.values():
            own = [x for x, r in candidates if r == run_id]
            chosen.update(own or [x for x, _ in candidates])
        chosen -= executions
        executions |= chosen
        cur.execute("select artifact_id from lineage_events where execution_id = any(%s) "
                    "and kind = 'input'", (sorted(chosen),))  # fmt: skip
        inputs = {r[0] for r in cur.fetchall()} - seen
        seen |= inputs
        frontier = sorted(inputs)
    return executions


def _executions(cur, ids: set[int]) -> list[dict]:
    cur.execute(
        "select x.id, x.run_id, x.step, x.parameters, x.state, x.started_at, x.finished_at, "
        "coalesce(array_agg(e.artifact_id order by e.artifact_id) "
        "         filter (where e.kind = 'input'), '{}'), "
        "coalesce(array_agg(e.artifact_id order by e.artifact_id) "
        "         filter (where e.kind = 'output'), '{}') "
        "from lineage_executions x left join lineage_events e on e.execution_id = x.id "
        "where x.id = any(%s) group by x.id "
        "order by x.started_at nulls last, x.id",
        (sorted(ids),),
    )
    names = ("id", "run_id", "step", "parameters", "state", "started_at", "finished_at",
             "inputs", "outputs")  # fmt: skip
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
