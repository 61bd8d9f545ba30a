"""`swiperec pipeline parameters | run --local | submit`: the training pipeline (compiling it is
a developer's action in a source checkout: `make compile`)."""

from __future__ import annotations

from swiperec.cli.common import UserError, ready_connection

_PARAM_HELP = (
    "a pipeline parameter as NAME=VALUE, repeatable, e.g. --param epochs=5 --param "
    "cutoff=2026-10-01T00:00:00Z --param 'beam_pipeline_args=[\"--runner=FlinkRunner\"]' "
    "(`swiperec pipeline parameters` lists them)"
)


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "pipeline",
        help="the training pipeline (KFP): list its parameters, run it locally, submit it to a "
        "cluster",
    )
    sub = parser.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")

    parameters = sub.add_parser("parameters", help="the pipeline's parameters and defaults")
    parameters.set_defaults(func=parameters_command)

    run = sub.add_parser(
        "run",
        help="run the compiled pipeline on this machine with KFP's local runner, against "
        "DATABASE_URL or the embedded server",
    )
    run.add_argument(
        "--local", action="store_true", required=True, help="run here (clusters: `submit`)"
    )
    run.add_argument(
        "--root", default=None, help="where the steps' artifacts go (default $SWIPEREC_HOME/runs)"
    )
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help=_PARAM_HELP)  # fmt: skip
    run.set_defaults(func=run_command)

    submit = sub.add_parser(
        "submit",
        help="submit the compiled pipeline to a Kubeflow Pipelines endpoint (kfp.Client)",
        epilog="The steps read DATABASE_URL from their environment unless database_url is "
        "given; on a cluster, provide it from a secret.",
    )
    submit.add_argument("--host", required=True, help="the KFP API endpoint URL")
    submit.add_argument("--experiment", default="swiperec", help="experiment name")
    submit.add_argument("--namespace", help="the Kubeflow profile namespace, if multi-user")
    submit.add_argument("--run-name", help="a name for the run")
    submit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help=_PARAM_HELP)  # fmt: skip
    submit.set_defaults(func=submit_command)


def parameters_command(args) -> int:
    from swiperec.pipeline.run import pipeline_parameters

    for name, spec in pipeline_parameters().items():
        print(f"{name:<24} {spec['type'].lower():<15} default {spec['default']!r}")
    return 0


def run_command(args) -> int:
    from swiperec.db import database_url
    from swiperec.pipeline.run import parse_arguments

    arguments = parse_arguments(args.param)
    ready_connection().close()  # the schema is up to date (or a clear error)
    arguments.setdefault("database_url", database_url())
    run_and_report(arguments, args.root)
    return 0


def run_and_report(arguments: dict, root: str | None) -> str:
    """Run the pipeline locally and print what it produced; returns the model version."""
    import os
    import sys

    from swiperec.db import connect
    from swiperec.db.embedded import default_home
    from swiperec.pipeline.run import run_local

    root = root or os.path.join(default_home(), "runs")
    print(f"pipeline      running locally (artifacts under {root})", flush=True)
    run = run_local(arguments, root, echo=sys.stdout)
    print(f"pipeline      finished in {run.seconds:.0f} s (log: {run.log})")
    conn = connect(arguments.get("database_url") or None)
    try:
        print_version(conn, run.model_version)
    finally:
        conn.close()
    return run.model_version


def print_version(conn, version: str) -> None:
    """The evaluation summary and the registry's record of `version`."""
    from swiperec.registry.lineage import show_version

    shown = show_version(conn, version)
    summary = shown.get("evaluation") or {}
    print()
    print("evaluation (test period)       AUC   like vs nope   Recall@50")
    for prefix, label in (
        ("", "model"),
        ("popularity_", "popularity"),
        ("like_rate_", "like rate"),
        ("matrix_factorization_", "matrix factorisation"),
    ):
        auc, recall = summary.get(f"{prefix}auc"), summary.get(f"{prefix}recall@50")
        nope = summary.get(f"{prefix}auc_like_vs_nope")
        print(f"  {label:<24} {_num(auc)}   {_num(nope)}          {_num(recall)}")
    if summary.get("oracle_auc") is not None:
        print(f"  ground-truth oracle      {_num(summary.get('oracle_auc'))}")
        share = summary.get("share_of_achievable_auc")
        print(f"  share of achievable AUC  {_num(share)}")
    blessing = shown.get("blessing") or {}
    verdict = "blessed" if blessing.get("blessed") else "not blessed"
    reasons = "; ".join(blessing.get("reasons") or [])
    print(f"  {verdict}" + (f": {reasons}" if reasons else ""))
    print()
    aliases = ", ".join(shown.get("aliases") or []) or "none"
    print(f"registered    {version}: stage {shown['stage']}, aliases {aliases}, "
          f"run {shown.get('run_id')}")  # fmt: skip
    print(f"lineage       swiperec registry lineage {version}")


def _num(value) -> str:
    return "    -" if value is None else f"{value:.3f}"


def submit_command(args) -> int:
    from swiperec.pipeline.run import parse_arguments, submit

    arguments = parse_arguments(args.param)
    try:
        run_id = submit(args.host, arguments, experiment=args.experiment,
                        run_name=args.run_name, namespace=args.namespace)  # fmt: skip
    except Exception as err:  # the client's connection and API errors, with the host named
        if isinstance(err, UserError):
            raise
        raise UserError(f"could not submit to {args.host}: {err}") from err
    print(f"submitted     run {run_id} to {args.host}")
    return 0
