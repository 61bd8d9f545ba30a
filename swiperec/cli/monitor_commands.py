"""`swiperec monitor run | alerts | serve`: recommendation-quality monitoring."""

from __future__ import annotations

import json
from datetime import UTC

from swiperec.cli.common import ready_connection


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "monitor", help="recommendation-quality metrics, alerts and their dashboard"
    )
    sub = parser.add_subparsers(dest="monitor_command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="one pass: partitions, metrics of the buckets not final yet, alert rules",
        epilog="Safe to run every minute (cron, a Kubernetes CronJob): a pass recomputes only "
        "the buckets whose outcomes can still change, and two passes take turns. Alerts go to "
        "the webhook in SWIPEREC_ALERT_WEBHOOK_URL (Slack-compatible JSON).",
    )
    run.add_argument("--config", help="a monitoring TOML file (default: the packaged one)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=run_command)

    alerts = sub.add_parser("alerts", help="the latest alerts, newest first")
    alerts.add_argument("--limit", type=int, default=20)
    alerts.add_argument("--json", action="store_true")
    alerts.set_defaults(func=alerts_command)

    serve = sub.add_parser(
        "serve", help="the dashboard (/) and the Prometheus metrics (/metrics) over HTTP"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.set_defaults(func=serve_command)


def run_command(args) -> int:
    from swiperec.monitoring.compute import run_pass
    from swiperec.monitoring.config import load_config

    config = load_config(args.config)
    conn = ready_connection()
    try:
        summary = run_pass(conn, config)
    finally:
        conn.close()
    if summary.skipped:
        print("skipped: another monitoring pass is running")
        return 0
    if args.json:
        print(json.dumps({
            "buckets": [_utc(b) for b in summary.buckets], "rows": summary.rows,
            "final_through": _utc(summary.final_through) if summary.final_through else None,
            "partitions_created": summary.partitions_created,
            "partitions_dropped": summary.partitions_dropped,
            "alerts": [a["message"] for a in summary.alerts], "seconds": summary.seconds,
        }, indent=2))  # fmt: skip
        return 0
    first = _utc(summary.buckets[0]) if summary.buckets else "-"
    final = _utc(summary.final_through) if summary.final_through else "-"
    print(f"buckets   {len(summary.buckets)} computed from {first} ({summary.rows} metric rows);"
          f" final through {final}")  # fmt: skip
    print(
        f"logs      {summary.partitions_created} day partitions created, "
        f"{len(summary.partitions_dropped)} dropped (retention)"
    )
    print(f"alerts    {len(summary.alerts)} fired")
    for alert in summary.alerts:
        print(f"  {alert['message']}")
    print(f"seconds   {summary.seconds}")
    return 0


def alerts_command(args) -> int:
    from swiperec.monitoring.alerts import list_alerts

    conn = ready_connection()
    try:
        rows = list_alerts(conn, args.limit)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no alerts")
    for row in rows:
        delivered = "delivered" if row["delivered_at"] else (row["delivery_error"] or "not sent")
        fired = row["fired_at"].astimezone(UTC)
        print(f"{fired:%Y-%m-%d %H:%M:%S} UTC  {row['message']}  [{delivered}]")
    return 0


def _utc(value) -> str:
    return value.astimezone(UTC).isoformat()


def serve_command(args) -> int:
    import uvicorn

    from swiperec.db import database_url
    from swiperec.experiments.web import routes as experiment_pages
    from swiperec.migration.web import routes as migration_page
    from swiperec.monitoring.dashboard import create_app

    ready_connection().close()
    print(f"dashboard at http://{args.host}:{args.port}/ (Prometheus: /metrics)", flush=True)
    url = database_url()
    app = create_app(url, extra_routes=experiment_pages(url) + migration_page(url))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
