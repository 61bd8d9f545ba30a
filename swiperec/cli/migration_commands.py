"""`swiperec migration calibrate | plan | status | advance | abandon`: the staged migration of
the training data from review-based pseudo-users to real users (swiperec.migration)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from swiperec.cli.common import UserError, ready_connection


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "migration", help="the training data's move from review pseudo-users to real users"
    )
    sub = parser.add_subparsers(dest="migration_command", required=True, metavar="COMMAND")

    calibrate = sub.add_parser(
        "calibrate",
        help="how review ratings map onto real users' like/nope: thresholds and weight",
        epilog="Compares each rating level's real like-rate (95 % CI, clustered by video) with "
        "the base rate on reviewed videos, and weighs a pseudo-label against a real swipe.",
    )
    calibrate.add_argument(
        "--until",
        metavar="YYYY-MM-DD",
        help="only reviews and swipes before this day (UTC), e.g. the training window's end",
    )
    calibrate.add_argument(
        "--min-pairs",
        type=int,
        default=None,
        help="fewer (review, swipe) pairs than this keep the defaults (default 300)",
    )
    calibrate.add_argument("--json", action="store_true", help="print the result as JSON")
    calibrate.set_defaults(func=calibrate_command)

    plan = sub.add_parser(
        "plan",
        help="start a migration plan: stages of the training mix, their entry conditions, gates",
        epilog="Stage 0 is today's mix (the version serving now). With --calibrate the ratings "
        "that read as like / nope come from `migration calibrate`, and its pseudo-user weight "
        "scales every stage's.",
    )
    plan.add_argument("name", nargs="?", default="to-real-users")
    plan.add_argument("--weights", default="1,0.5,0.25,0", help="pseudo-user weight per stage")
    plan.add_argument("--min-users", default="0,200,500,1000",
                      help="real users who swiped in the window, per stage")  # fmt: skip
    plan.add_argument("--min-swipes", default="0,10000,25000,50000",
                      help="real swipes in the window, per stage")  # fmt: skip
    plan.add_argument("--window-days", type=int, default=90)
    plan.add_argument(
        "--max-auc-drop",
        type=float,
        default=0.01,
        help="the gate: real users' AUC like vs nope below serving's by at most",
    )
    plan.add_argument(
        "--max-recall-drop",
        type=float,
        default=0.05,
        help="the gate: real users' Recall@50 below serving's by at most (relative)",
    )
    plan.add_argument(
        "--calibrate",
        action="store_true",
        help="ratings and the pseudo-user weight from `migration calibrate`",
    )
    plan.add_argument("--like-rating", type=int, default=4)
    plan.add_argument("--nope-rating", type=int, default=2)
    plan.set_defaults(func=plan_command)

    status = sub.add_parser("status", help="the plan, its stages, where it is, what happened")
    status.add_argument("name", nargs="?", help="a plan (default: the active one)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=status_command)

    advance = sub.add_parser(
        "advance",
        help="the next stage, when the current one is live and the next one's entry holds",
    )
    advance.add_argument("--by", default="cli", help="who decided (recorded)")
    advance.set_defaults(func=advance_command)

    abandon = sub.add_parser("abandon", help="end the active plan where it is")
    abandon.add_argument("--reason", required=True)
    abandon.add_argument("--by", default="cli")
    abandon.set_defaults(func=abandon_command)


def _day(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as e:
        raise UserError(f"--until is a date YYYY-MM-DD, got {text!r}") from e
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def calibrate_command(args) -> int:
    from swiperec.migration.calibrate import calibrate, render_text

    until = _day(args.until)
    extra = {} if args.min_pairs is None else {"min_pairs": args.min_pairs}
    conn = ready_connection()
    try:
        result = calibrate(conn, until=until, **extra)
    finally:
        conn.close()
    print(json.dumps(result, indent=1) if args.json else render_text(result))
    return 0


def _numbers(text: str, kind, what: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise UserError(f"{what} is a comma-separated list of numbers, got {text!r}") from e


def plan_command(args) -> int:
    from swiperec.migration.plan import PlanConfig, Stage, create
    from swiperec.migration.report import render_text

    weights = _numbers(args.weights, float, "--weights")
    users = _numbers(args.min_users, int, "--min-users")
    swipes = _numbers(args.min_swipes, int, "--min-swipes")
    if not len(weights) == len(users) == len(swipes):
        raise UserError("--weights, --min-users and --min-swipes need one value per stage each")
    conn = ready_connection()
    try:
        today = (args.like_rating, args.nope_rating)
        ratings, calibration, first = today, {}, {}
        if args.calibrate:
            from swiperec.migration.calibrate import calibrate

            # Stage 0 stays today's mix (what serves was trained at); the later stages read
            # ratings as calibrated and scale the pseudo-user weight by the calibrated one.
            calibration = calibrate(conn)
            chosen = calibration["feature_config"]
            ratings = (chosen["like_rating"], chosen["nope_rating"])
            weights = weights[:1] + [w * chosen["pseudo_user_weight"] for w in weights[1:]]
            first = {"like_rating": today[0], "nope_rating": today[1]}
        stages = tuple(
            Stage(w, min_real_users=u, min_real_swipes=n, max_auc_drop=args.max_auc_drop,
                  max_recall_drop=args.max_recall_drop, **(first if i == 0 else {}))
            for i, (w, u, n) in enumerate(zip(weights, users, swipes, strict=True))
        )  # fmt: skip
        config = PlanConfig(
            stages=stages, like_rating=ratings[0], nope_rating=ratings[1],
            window_days=args.window_days,
            calibration=calibration,
        )  # fmt: skip
        plan = create(conn, args.name, config, actor="cli")
    finally:
        conn.close()
    print(render_text(plan))
    return 0


def _status_json(plan: dict) -> str:
    return json.dumps({**plan, "config": plan["config"].to_dict()}, indent=1, default=str)


def status_command(args) -> int:
    from swiperec.migration.plan import get
    from swiperec.migration.report import render_text

    conn = ready_connection()
    try:
        plan = get(conn, args.name)
    finally:
        conn.close()
    if plan is None:
        raise UserError(
            f"no plan {args.name!r}" if args.name else "no active plan: `swiperec migration plan`"
        )
    print(_status_json(plan) if args.json else render_text(plan))
    return 0


def advance_command(args) -> int:
    from swiperec.migration.plan import advance, get
    from swiperec.migration.report import render_text

    conn = ready_connection()
    try:
        outcome = advance(conn, actor=args.by)
        plan = get(conn, None) if outcome["result"] == "advanced" else None
    finally:
        conn.close()
    if outcome["result"] == "refused":
        print("advance refused at stage {}:".format(outcome["stage"]))
        for reason in outcome["reasons"]:
            print(f"  - {reason}")
        return 1
    print(f"{outcome['result']}: stage {outcome['stage']}")
    if plan is not None:
        print(render_text(plan))
    return 0


def abandon_command(args) -> int:
    from swiperec.migration.plan import abandon

    conn = ready_connection()
    try:
        abandon(conn, actor=args.by, reason=args.reason)
    finally:
        conn.close()
    print("abandoned")
    return 0
