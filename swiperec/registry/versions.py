"""The life of a model version, in one place: its name, who owns it, its stage, promotion.

    version = new_version_name()                       # v20261202-061530-123456
    claim_version(cur, version, run_id)                # this run owns the name, or VersionTaken
    record_evaluation(conn, version, model_uri, results, blessing, run_id=run_id)
    promote(conn, version)                             # serving switches; stage production
    promote(conn, "v6", force=True, reason="rollback after incident 12")   # unblessed, recorded

Stages move one way: `candidate` (claimed or evaluated, not blessed) -> `blessed` (the
evaluator's gate passed) -> `production` (promoted: its embeddings serve) -> `archived` (the
next promotion replaced it). Promotion is the only way serving switches: it checks the blessing,
switches `serving_state` and moves the stages in one transaction, and logs the switch in
`embedding_activations` (forced or not, the reason, who, when). A version belongs to at most one
pipeline run: the claim is one `insert ... on conflict` statement, so of two runs that name the
same version at once exactly one owns it and the other fails with `VersionTaken`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from swiperec.embeddings.store import switch_serving
from swiperec.errors import SwiperecError

_LEFT_OUT = ("curves", "score_distributions", "embeddings")


class RegistryError(SwiperecError):
    """A version or alias that does not exist, or a request the registry cannot honour."""


class VersionTaken(RegistryError):
    """The version name belongs to another pipeline run."""


def new_version_name(now: datetime | None = None) -> str:
    """A new version's name from the time, to the microsecond: v20261202-061530-123456."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("v%Y%m%d-%H%M%S-%f")


def version_exists(conn, version: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("select 1 from model_versions where model_version = %s", (version,))
        found = cur.fetchone() is not None
    conn.rollback()
    return found


def claim_version(cur, version: str, run_id: str | None) -> None:
    """Make `version` exist, owned by `run_id`, inside the caller's transaction (`cur`).

    One statement, so concurrent claims cannot both win: a new name is inserted as a
    `candidate` of this run; a name without a run (evaluated by hand) becomes this run's; a name
    this run already owns stays its own (a step that is retried). A name another run owns
    raises `VersionTaken`. `run_id=None` (an evaluation recorded by hand) claims nothing."""
    if not version or not version.strip() or version != version.strip():
        raise ValueError(f"model version {version!r}: a non-empty name without outer spaces")
    cur.execute(
        "insert into model_versions (model_version, stage, run_id) values (%s, 'candidate', %s) "
        "on conflict (model_version) do update set "
        "run_id = coalesce(model_versions.run_id, excluded.run_id), updated_at = now() "
        "returning run_id",
        (version, run_id),
    )
    owner = cur.fetchone()[0]
    if run_id is not None and owner != run_id:
        raise VersionTaken(
            f"model version {version!r} is registered by run {owner!r}; a version belongs to one "
            f"run, so name run {run_id!r}'s version differently (or leave model_version empty)"
        )


def record_evaluation(
    conn, version: str, model_uri: str, results: dict, blessing: dict, run_id: str | None = None
) -> None:
    """Record `version`'s evaluation (claiming the name for `run_id`); its stage becomes
    `blessed` or `candidate` (a version in production or archived keeps its stage)."""
    evaluation = {k: v for k, v in results.items() if k not in _LEFT_OUT}
    stage = "blessed" if blessing["blessed"] else "candidate"
    with conn, conn.cursor() as cur:
        claim_version(cur, version, run_id)
        cur.execute(
            "update model_versions set model_uri = %s, blessed = %s, evaluation = %s, "
            "blessing = %s, updated_at = now(), stage = case "
            "when stage in ('production', 'archived') then stage else %s end "
            "where model_version = %s",
            (model_uri, blessing["blessed"], json.dumps(evaluation), json.dumps(blessing),
             stage, version),
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


def promote(
    conn, version: str, *, force: bool = False, reason: str | None = None, actor: str | None = None
) -> str | None:
    """Make `version` serve, in one transaction; returns the version that served before.

    Refused (`RegistryError`) for a version that is not evaluated, not blessed or rolled back
    (an experiment's controller or a person took it out of a rollout), unless
    `force` with a `reason`: the override is logged with the reason and `actor` (default: the
    database user) in `embedding_activations`. Both embedding sets must be ready
    (`EmbeddingSetError` otherwise). The version becomes `production`, the one before `archived`.
    """
    with conn, conn.cursor() as cur:
        return promote_in(cur, version, force=force, reason=reason, actor=actor)


def promote_in(
    cur, version: str, *, force: bool = False, reason: str | None = None, actor: str | None = None
) -> str | None:
    """`promote` inside the caller's transaction (a rollout completes in the same transaction
    that ends its routes)."""
    reason = (reason or "").strip() or None
    if force and reason is None:
        raise RegistryError(f"promoting {version!r} by force needs a reason (--reason TEXT)")
    cur.execute("select blessed, evaluation is not null, stage from model_versions "
                "where model_version = %s for update", (version,))  # fmt: skip
    row = cur.fetchone()
    refusal = None
    if row is None or not row[1]:
        refusal = f"{version!r} has no recorded evaluation"
    elif not row[0]:
        refusal = f"{version!r} is not blessed"
    elif row[2] == "rolled_back":
        refusal = f"{version!r} was rolled back (swiperec registry show {version} says why)"
    if refusal and not force:
        raise RegistryError(
            f"{refusal}: only a blessed version serves; to promote it anyway, force it "
            "with a reason (--force --reason TEXT), which is recorded"
        )
    previous = switch_serving(cur, version)
    cur.execute(
        "insert into embedding_activations (model_version, previous_version, forced, reason, "
        "promoted_by) values (%s, %s, %s, %s, coalesce(%s, current_user))",
        (version, previous, refusal is not None, reason, actor),
    )
    mark_production(cur, version)
    return previous


def mark_production(cur, version: str) -> None:
    """`version` becomes `production` and the one before it `archived`. Takes a cursor: it runs
    inside the transaction that switches serving (`promote`)."""
    cur.execute("update model_versions set stage = 'archived', updated_at = now() "
                "where stage = 'production' and model_version <> %s", (version,))  # fmt: skip
    cur.execute(
        "insert into model_versions (model_version, stage) values (%s, 'production') "
        "on conflict (model_version) do update set stage = 'production', updated_at = now()",
        (version,),
    )


def last_promotion(conn) -> dict | None:
    """The newest serving switch: version, previous, forced, reason, promoted_by, at."""
    with conn.cursor() as cur:
        cur.execute(
            "select model_version, previous_version, forced, reason, promoted_by, activated_at "
            "from embedding_activations order by id desc limit 1"
        )
        row = cur.fetchone()
    conn.rollback()
    keys = ("version", "previous", "forced", "reason", "promoted_by", "at")
    return dict(zip(keys, row, strict=True)) if row else None


def forget_all(conn) -> None:
    """Forget what served and was registered: experiments, serving state and routes, every
    embedding set, model versions and their lineage. Only for the demo, which replaces the data
    with them."""
    from swiperec.embeddings.store import retire

    with conn, conn.cursor() as cur:
        cur.execute(
            "truncate experiment_events, experiment_arms, experiments, migration_events, "
            "migration_plans"
        )
        cur.execute("delete from serving_routes")
        cur.execute("delete from serving_state")
    retire(conn, keep=0)
    with conn, conn.cursor() as cur:
        cur.execute("truncate experiment_events, experiment_arms, experiments, serving_routes, "
                    "lineage_events, lineage_executions, model_version_aliases, model_versions, "
                    "lineage_artifacts")  # fmt: skip
