"""`swiperec registry list | show | lineage | alias`: model versions, their lineage, aliases."""

from __future__ import annotations

import json
from datetime import UTC

from swiperec.cli.common import UserError, ready_connection


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "registry", help="model versions: list, show, lineage (which data and run made them), alias"
    )
    sub = parser.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="every version, newest first, with its key metrics")
    listing.set_defaults(func=list_command)

    show = sub.add_parser("show", help="one version: stage, aliases, metrics, blessing")
    show.add_argument("name", metavar="VERSION_OR_ALIAS")
    show.set_defaults(func=show_command)

    lineage = sub.add_parser(
        "lineage", help="the data, transform and run that produced a version, and what it made"
    )
    lineage.add_argument("name", metavar="VERSION_OR_ALIAS")
    lineage.add_argument("--json", action="store_true", help="print the lineage as JSON")
    lineage.set_defaults(func=lineage_command)

    alias = sub.add_parser("alias", help="point an alias (e.g. champion) at a version")
    alias.add_argument("alias", metavar="NAME")
    alias.add_argument("name", metavar="VERSION", help="a version, or an alias to copy")
    alias.set_defaults(func=alias_command)


def _registry_call(function, *args):
    """Run a registry function on a ready connection; its errors become user errors."""
    from swiperec.registry.lineage import RegistryError

    conn = ready_connection()
    try:
        return function(conn, *args)
    except (RegistryError, ValueError) as err:
        raise UserError(str(err)) from err
    finally:
        conn.close()


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _yes_no(value) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _when(value) -> str:
    return value.astimezone(UTC).isoformat(sep=" ", timespec="seconds") if value else "-"


def _day(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


def list_command(args) -> int:
    from swiperec.registry.lineage import list_versions

    rows = _registry_call(list_versions)
    if not rows:
        print("no model versions yet: a pipeline run or `swiperec evaluate --version V` adds one")
        return 0
    print(
        f"{'version':<20}{'stage':<12}{'blessed':<9}{'AUC':>7}{'R@50':>7}  "
        f"{'run':<18}{'created (UTC)':<18}aliases"
    )
    for row in rows:
        metrics = row["metrics"]
        mark = "  <- serving" if row["serving"] else ""
        print(
            f"{row['version']:<20}{row['stage']:<12}{_yes_no(row['blessed']):<9}"
            f"{_number(metrics['auc']):>7}{_number(metrics['recall@50']):>7}  "
            f"{row['run_id'] or '-':<18}{_day(row['created_at']):<18}"
            f"{', '.join(row['aliases']) or '-'}{mark}"
        )
    return 0


def show_command(args) -> int:
    from swiperec.registry.lineage import resolve, show_version

    row = _registry_call(lambda conn: show_version(conn, resolve(conn, args.name)))
    print(f"version       {row['version']}")
    print(f"stage         {row['stage']}")
    print(f"blessed       {_yes_no(row['blessed'])}")
    print(f"aliases       {', '.join(row['aliases']) or '-'}")
    print(f"serving       {_yes_no(row['serving'])}")
    print(f"run           {row['run_id'] or '-'}")
    print(f"model         {row['model_uri'] or '-'}")
    print(f"created       {_when(row['created_at'])}")
    summary = row["evaluation"]
    if summary is None:
        print("evaluation    none recorded")
    else:
        print(
            f"evaluation    AUC like vs all {_number(summary['auc'])} "
            f"(popularity {_number(summary['popularity_auc'])}, "
            f"oracle {_number(summary['oracle_auc'])}), "
            f"PR-AUC {_number(summary['pr_auc'])}, "
            f"share of achievable AUC {_number(summary['share_of_achievable_auc'])}"
        )
        print(
            f"              AUC like vs nope {_number(summary['auc_like_vs_nope'])} "
            f"(like rate {_number(summary['like_rate_auc_like_vs_nope'])})"
        )
        print(
            f"              recall@50 {_number(summary['recall@50'])}, "
            f"NDCG@50 {_number(summary['ndcg@50'])}; test period from "
            f"{summary['test_start'] or '-'}"
        )
    blessing = row["blessing"]
    if blessing is not None:
        verdict = "passed" if blessing["blessed"] else "failed"
        print(f"blessing      {verdict}")
        for reason in blessing["reasons"]:
            print(f"              - {reason}")
    for i, e in enumerate(row["experiments"]):
        ended = (
            f"; {e['state']} {_when(e['ended_at'])} by {e['ended_by']}: {e['reason']}"
            if e["ended_at"] else f"; {e['state']}"
        )  # fmt: skip
        label = "experiments" if i == 0 else ""
        print(f"{label:<14}{e['name']} ({e['kind']}, arm {e['arm']}){ended}")
    return 0


def alias_command(args) -> int:
    from swiperec.registry.lineage import resolve, set_alias

    def move(conn):
        version = resolve(conn, args.name)
        set_alias(conn, args.alias, version)
        return version

    version = _registry_call(move)
    print(f"alias         {args.alias} -> {version}")
    return 0


def lineage_command(args) -> int:
    from swiperec.registry.lineage import lineage, resolve

    found = _registry_call(lambda conn: lineage(conn, resolve(conn, args.name)))
    if args.json:
        print(json.dumps(found, indent=2, default=_json_default))
        return 0
    for line in lineage_lines(found):
        print(line)
    return 0


def _json_default(value):
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def lineage_lines(found: dict) -> list[str]:
    """The lineage as an indented chain: each execution in time order, what it read (`<-`) and
    what it wrote (`->`). An artifact is described in full where it first appears."""
    artifacts, serving = found["artifacts"], found["serving"]
    now = "serving now" if serving["now"] else "not serving"
    lines = [f"model version {found['version']}  (run {found['run_id']}, {now})"]
    described: set[int] = set()

    def artifact_line(arrow: str, artifact_id: int) -> str:
        artifact = artifacts[artifact_id]
        text = f"    {arrow} {artifact['type']} #{artifact_id}"
        if artifact_id in described:
            return text
        described.add(artifact_id)
        text += f"  {artifact['uri']}"
        if artifact["content_hash"]:
            text += f"  {_short_hash(artifact['content_hash'])}"
        details = _describe(artifact["metadata"])
        if details:
            text += f"  ({details})"
        if artifact_id == serving["embedding_set"] and serving["now"]:
            text += "  [serving now]"
        return text

    for execution in found["executions"]:
        header = f"  {execution['step']}  [{execution['state']}]"
        if execution["run_id"] != found["run_id"]:
            header += f"  run {execution['run_id']}"
        if execution["started_at"]:
            header += f"  {_when(execution['started_at'])}"
        params = _describe(execution["parameters"])
        if params:
            header += f"  ({params})"
        lines.append(header)
        lines += [artifact_line("<-", i) for i in execution["inputs"]]
        lines += [artifact_line("->", i) for i in execution["outputs"]]
    if serving["embedding_set"] is None:
        lines.append("  no embedding set recorded for this version")
    if serving["sets"]:
        sets = ", ".join(f"{kind} {state}" for kind, state in serving["sets"].items())
        lines.append(f"  embedding sets in the database: {sets}")
    return lines


def _short_hash(value: str) -> str:
    algorithm, _, digest = value.rpartition(":")
    return f"{algorithm}:{digest[:12]}" if algorithm else digest[:12]


def _describe(values: dict, limit: int = 160) -> str:
    """`key value` pairs of a metadata or parameters dict, one level of nesting, shortened."""
    parts = []
    for key, value in values.items():
        if isinstance(value, dict):
            inner = " ".join(f"{k}={_scalar(v)}" for k, v in value.items() if _is_scalar(v))
            parts.append(f"{key} {inner}" if inner else key)
        elif isinstance(value, list):
            more = ",..." if len(value) > 5 else ""
            parts.append(f"{key} {','.join(_scalar(v) for v in value[:5])}{more}")
        else:
            parts.append(f"{key} {_scalar(value)}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value) if _is_scalar(value) else "..."
