"""`swiperec experiment start|stop|list|report` (A/B tests between model versions) and
`swiperec rollout start|status|advance|rollback|tick` (staged rollouts and their controller)."""

from __future__ import annotations

import json

from swiperec.cli.common import UserError, log_to_stderr, ready_connection


def _config_args(parser, *, rollout: bool) -> None:
    parser.add_argument(
        "--min-users",
        type=int,
        default=100,
        help="users per arm before a verdict may act (default 100)",
    )
    parser.add_argument(
        "--min-answered",
        type=int,
        default=1000,
        help="answered served items per arm, likewise (default 1000)",
    )
    parser.add_argument(
        "--planned-users",
        type=int,
        default=1000,
        help="users per arm where the confidence sequences are tightest",
    )
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--attribution-seconds",
        type=int,
        default=1800,
        help="a swipe this soon after a serve is its outcome (default 1800)",
    )
    if rollout:
        parser.add_argument(
            "--stages",
            default="1,5,25,50,100",
            help="candidate share per stage, percent (default 1,5,25,50,100)",
        )
        parser.add_argument(
            "--stage-max-hours",
            type=float,
            default=48,
            help="roll back a stage still inconclusive after this (default 48)",
        )
    else:
        parser.add_argument(
            "--max-hours",
            type=float,
            default=14 * 24,
            help="the tick ends the test after this (default 336)",
        )


def config_from(args):
    from swiperec.experiments.design import ExperimentConfig

    extra = {}
    if getattr(args, "stages", None):
        try:
            extra["stages"] = tuple(int(s) for s in args.stages.split(","))
        except ValueError as e:
            raise UserError(f"--stages: comma-separated percentages, got {args.stages!r}") from e
        extra["stage_max_hours"] = args.stage_max_hours
    if getattr(args, "max_hours", None):
        extra["max_hours"] = args.max_hours
    return ExperimentConfig(
        min_users_per_arm=args.min_users,
        min_answered_per_arm=args.min_answered,
        planned_users_per_arm=args.planned_users,
        alpha=args.alpha,
        attribution_seconds=args.attribution_seconds,
        **extra,
    )


def add_commands(commands) -> None:
    parser = commands.add_parser("experiment", help="A/B tests between model versions")
    sub = parser.add_subparsers(dest="experiment_command", required=True, metavar="COMMAND")

    start = sub.add_parser(
        "start",
        help="start an A/B test: users split into sticky arms, each on a version",
        epilog="Arms are ARM=VERSION:SHARE (percent of the test's traffic); the rest of the "
        "traffic is the control arm on --control (default: the serving version).",
    )
    start.add_argument("name")
    start.add_argument("arms", nargs="+", metavar="ARM=VERSION:SHARE")
    start.add_argument("--control", help="the control version (default: the serving one)")
    start.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="percent kept on control and reported apart (default 0)",
    )
    start.add_argument(
        "--traffic",
        default="0:10000",
        help="the global user buckets FROM:TO the test takes (default all)",
    )
    _config_args(start, rollout=False)
    start.set_defaults(func=start_command)

    stop = sub.add_parser("stop", help="end a test: every user back on the serving version")
    stop.add_argument("name")
    stop.add_argument("--reason", required=True)
    stop.set_defaults(func=stop_command)

    listing = sub.add_parser("list", help="every experiment and rollout")
    listing.set_defaults(func=list_command)

    report = sub.add_parser("report", help="the analysis: SRM, effects, guardrails, decisions")
    report.add_argument("name")
    report.add_argument("--html", metavar="FILE", help="also write the HTML report here")
    report.add_argument("--looks", type=int, default=8, help="points over time in the HTML")
    report.add_argument("--json", action="store_true", help="print the analysis as JSON")
    report.set_defaults(func=report_command)

    rollout = commands.add_parser("rollout", help="staged rollouts with automatic rollback")
    rsub = rollout.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")
    rstart = rsub.add_parser("start", help="roll a blessed version out by stages")
    rstart.add_argument("version")
    rstart.add_argument("--name", help="default rollout-VERSION")
    _config_args(rstart, rollout=True)
    rstart.set_defaults(func=rollout_start_command)
    status = rsub.add_parser("status", help="the running rollouts: stage and last decision")
    status.set_defaults(func=rollout_status_command)
    advance = rsub.add_parser("advance", help="move to the next stage by hand")
    advance.add_argument("name")
    advance.add_argument("--reason", required=True)
    advance.set_defaults(func=rollout_advance_command)
    back = rsub.add_parser("rollback", help="every user back on control, now")
    back.add_argument("name")
    back.add_argument("--reason", required=True)
    back.set_defaults(func=rollout_rollback_command)
    tick = rsub.add_parser(
        "tick",
        help="the controller, one pass: advance, complete or roll back on the evidence",
        epilog="Safe to run every minute (cron, a Kubernetes CronJob, the KFP component).",
    )
    tick.set_defaults(func=rollout_tick_command)


def _parse_arm(text: str) -> tuple[str, str, float]:
    try:
        arm, rest = text.split("=", 1)
        version, share = rest.rsplit(":", 1)
        return arm, version, float(share)
    except ValueError as e:
        raise UserError(f"an arm is ARM=VERSION:SHARE, got {text!r}") from e


def start_command(args) -> int:
    from swiperec.experiments.design import start

    conn = ready_connection()
    try:
        control = args.control
        if control is None:
            with conn.cursor() as cur:
                cur.execute("select model_version from serving_state")
                row = cur.fetchone()
            conn.rollback()
            if row is None:
                raise UserError("nothing serves yet: name the control version (--control V)")
            control = row[0]
        arms = [_parse_arm(a) for a in args.arms]
        try:
            lo, hi = (int(x) for x in args.traffic.split(":"))
        except ValueError as e:
            raise UserError(f"--traffic is FROM:TO buckets, got {args.traffic!r}") from e
        experiment = start(
            conn,
            args.name,
            control=control,
            arms={a: v for a, v, _ in arms},
            shares={a: s for a, _, s in arms},
            holdout=args.holdout,
            traffic=(lo, hi),
            config=config_from(args),
        )
    finally:
        conn.close()
    print(
        f"started {experiment['name']}: "
        + ", ".join(
            f"{arm} {info['version']} ({(info['to'] - info['from']) / 100:g} %)"
            for arm, info in experiment["arms"].items()
        )
    )
    return 0


def stop_command(args) -> int:
    from swiperec.experiments.design import stop

    conn = ready_connection()
    try:
        stop(conn, args.name, reason=args.reason)
    finally:
        conn.close()
    print(f"stopped {args.name}: every user is back on the serving version")
    return 0


def list_command(args) -> int:
    from swiperec.experiments.design import list_experiments

    conn = ready_connection()
    try:
        experiments = list_experiments(conn)
    finally:
        conn.close()
    if not experiments:
        print("no experiments")
    for e in experiments:
        arms = ", ".join(f"{a}={i['version']}" for a, i in e["arms"].items())
        stage = f" stage {e['stage']}" if e["kind"] == "rollout" else ""
        print(
            f"{e['name']:<24} {e['kind']:<8} {e['state']:<12}{stage} "
            f"[{e['traffic_from']}, {e['traffic_to']})  {arms}"
        )
    return 0


def report_command(args) -> int:
    from swiperec.experiments.analysis import analyse, history
    from swiperec.experiments.design import events, get
    from swiperec.experiments.report import render_html, render_text

    conn = ready_connection()
    try:
        experiment = get(conn, args.name)
        decided = events(conn, args.name)
        result = analyse(conn, args.name)  # what is printed: the analysis now
        if args.html:
            # The page's last look is the analysis now as someone who looked at every look saw
            # it: each always-valid p-value the lowest so far, each sequence the narrowest.
            looks = history(conn, args.name, looks=args.looks)
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(render_html(looks[-1], experiment, decided, looks))
    finally:
        conn.close()
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print(render_text(result, experiment, decided))
    if args.html:
        print(f"\nHTML report: {args.html}")
    return 0


def rollout_start_command(args) -> int:
    from swiperec.experiments.design import start_rollout

    conn = ready_connection()
    try:
        experiment = start_rollout(conn, args.version, name=args.name, config=config_from(args))
    finally:
        conn.close()
    share = experiment["arms"]["candidate"]["to"] / 100
    print(
        f"started {experiment['name']}: {args.version} serves {share:g} % of users; "
        "`swiperec rollout tick` moves it on"
    )
    return 0


def rollout_status_command(args) -> int:
    from swiperec.experiments.design import events, list_experiments

    conn = ready_connection()
    try:
        rollouts = [e for e in list_experiments(conn) if e["kind"] == "rollout"]
        for e in rollouts:
            last = events(conn, e["name"])[-1]
            share = e["arms"]["candidate"]["to"] / 100
            print(
                f"{e['name']:<24} {e['state']:<12} candidate "
                f"{e['arms']['candidate']['version']} on {share:g} % (stage {e['stage']}); "
                f"last: {last['event']} by {last['decided_by']}: {last['reason'] or ''}"
            )
        if not rollouts:
            print("no rollouts")
    finally:
        conn.close()
    return 0


def rollout_advance_command(args) -> int:
    from swiperec.experiments.rollout import advance

    conn = ready_connection()
    try:
        action = advance(conn, args.name, reason=args.reason)
    finally:
        conn.close()
    done = "completed (the candidate serves everyone)" if action == "complete" else "advanced"
    print(f"{args.name}: {done}")
    return 0


def rollout_rollback_command(args) -> int:
    from swiperec.experiments.rollout import rollback

    conn = ready_connection()
    try:
        rollback(conn, args.name, reason=args.reason)
    finally:
        conn.close()
    print(f"{args.name}: rolled back; every user is on the control version")
    return 0


def rollout_tick_command(args) -> int:
    from swiperec.experiments.rollout import tick

    log_to_stderr("%(asctime)s %(name)s %(message)s")
    conn = ready_connection()
    try:
        decisions = tick(conn)
    finally:
        conn.close()
    for d in decisions:
        print(f"{d['experiment']}: {d['action']} ({d['reason']})")
    if not decisions:
        print("no running experiments")
    return 0
