"""One monitoring pass: `swiperec monitor run`.

    summary = run_pass(conn, load_config())

1. Partitions: the coming days' partitions of the serving logs exist; days older than the
   retention are dropped whole.
2. Baselines: each version in use has its training week's swipe statistics (for input drift).
3. Metrics: every bucket from the last final one up to now is computed inside PostgreSQL
   (`metrics.sql`) and replaces what that bucket had (idempotent). A bucket is final once its
   end is `attribution_seconds` in the past: no later swipe can change its outcomes, so no later
   pass reads it again. The first pass starts at the first served row. The day partitions the
   buckets read are analyzed first when more than 1 % of them changed since their statistics.
4. Alerts: the rules are evaluated on the settled buckets (`swiperec.monitoring.alerts`).

Safe to run every minute from cron or a Kubernetes CronJob: a pass that finds another one
running (an advisory lock) returns at once, so a slow pass is never doubled or queued behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from swiperec.monitoring.config import MonitoringConfig

METRICS_SQL = (Path(__file__).with_name("metrics.sql")).read_text()
_LOCK = "swiperec: monitoring pass"
LOGS = ("public.served_recommendations", "public.serving_requests")


@dataclass
class PassSummary:
    buckets: list[datetime] = field(default_factory=list)  # computed in this pass
    rows: int = 0  # metric rows written
    final_through: datetime | None = None
    partitions_created: int = 0
    partitions_dropped: list[str] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)  # fired in this pass
    seconds: dict = field(default_factory=dict)
    skipped: bool = False  # another pass held the lock


def run_pass(conn, config: MonitoringConfig, now: datetime | None = None,
             deliver=None) -> PassSummary:  # fmt: skip
    """One pass (see the module docstring) on `conn` (not in autocommit mode, not inside a
    transaction). `now`: the pass's clock (default the database's);
    `deliver(alert)`: posts a fired alert (default: the webhook of
    `swiperec.monitoring.alerts.deliver_from_env`)."""
    from swiperec.monitoring import alerts

    summary = PassSummary()
    with conn.cursor() as cur:
        cur.execute("select pg_try_advisory_lock(hashtext(%s))", (_LOCK,))
        locked = cur.fetchone()[0]
    conn.commit()
    if not locked:  # another pass is running: it does this one's work too
        summary.skipped = True
        return summary
    try:
        if now is None:
            with conn.cursor() as cur:
                cur.execute("select now()")
                now = cur.fetchone()[0]
            conn.rollback()
        started = time.perf_counter()
        maintain_partitions(conn, config, now, summary)
        summary.seconds["partitions"] = round(time.perf_counter() - started, 3)

        started = time.perf_counter()
        ensure_baselines(conn)
        summary.seconds["baselines"] = round(time.perf_counter() - started, 3)

        started = time.perf_counter()
        compute_buckets(conn, config, now, summary)
        summary.seconds["metrics"] = round(time.perf_counter() - started, 3)

        started = time.perf_counter()
        summary.alerts = alerts.evaluate(conn, config, now, deliver=deliver)
        summary.seconds["alerts"] = round(time.perf_counter() - started, 3)
    finally:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_unlock(hashtext(%s))", (_LOCK,))
        conn.commit()
    return summary


def maintain_partitions(conn, config: MonitoringConfig, now: datetime, summary) -> None:
    """Day partitions from today to `partitions_ahead_days` ahead; days past the retention go."""
    today = now.astimezone(UTC).date()
    keep_from = today - timedelta(days=config.retention.served_days)
    last = today + timedelta(days=config.retention.partitions_ahead_days)
    with conn, conn.cursor() as cur:
        for table in LOGS:
            # Days the default partition took (no partition existed yet) get theirs too, so
            # retention drops them like any other day.
            default = "swiperec_private." + table.split(".")[1] + "_default"
            cur.execute(f"select min(created_at) from {default}")
            oldest = cur.fetchone()[0]
            first = min(today, oldest.astimezone(UTC).date()) if oldest else today
            cur.execute("select swiperec_private.ensure_day_partitions(%s, %s, %s)",
                        (table, first, last))  # fmt: skip
            summary.partitions_created += cur.fetchone()[0]
            cur.execute("select swiperec_private.drop_day_partitions(%s, %s)", (table, keep_from))
            summary.partitions_dropped += [r[0] for r in cur.fetchall()]


def ensure_baselines(conn) -> None:
    """Each version in use gets its training week's swipe statistics once: 168 hours and
    UTC hours, whatever the session's time zone (see metrics.sql)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            insert into swiperec_private.monitoring_baselines
                (model_version, window_start, window_end, swipes, like_rate, swipes_per_user,
                 genre_mix)
            select v.model_version, w.window_end - interval '168 hours', w.window_end, s.swipes,
                   s.like_rate, s.swipes_per_user, coalesce(g.mix, '{}')
            from (select distinct model_version from swiperec_private.versions_in_use) u
            join public.model_versions v using (model_version)
            left join swiperec_private.monitoring_baselines known
                on known.model_version = u.model_version
            cross join lateral (
                select max(d.created_at) as window_end from public.user_video_decisions d
                where d.created_at <= v.created_at
            ) w
            cross join lateral (
                select sum(h.swipes) as swipes, sum(h.likes)::float8 / sum(h.swipes) as like_rate,
                       avg(h.swipes::float8 / h.users) as swipes_per_user  -- per active hour
                from (
                    select count(*) as swipes, count(*) filter (where d.decision = 'like')
                           as likes, count(distinct d.user_id) as users
                    from public.user_video_decisions d
                    where d.created_at > w.window_end - interval '168 hours'
                      and d.created_at <= w.window_end
                    group by date_trunc('hour', d.created_at, 'UTC')
                ) h
            ) s
            cross join lateral (
                select jsonb_object_agg(genre, share) as mix from (
                    select g.genre, count(*)::float8 / sum(count(*)) over () as share
                    from public.user_video_decisions d
                    join public.videos vid on vid.id = d.video_id
                    cross join lateral unnest(vid.genres) as g(genre)
                    where d.decision = 'like'
                      and d.created_at > w.window_end - interval '168 hours'
                      and d.created_at <= w.window_end
                    group by g.genre
                ) t
            ) g
            where known.model_version is null and w.window_end is not null
            on conflict (model_version) do nothing
            """
        )


def compute_buckets(conn, config: MonitoringConfig, now: datetime, summary) -> None:
    """Recompute every bucket that is not final yet, oldest first; then move the mark."""
    b = config.buckets
    size = timedelta(seconds=b.seconds)
    with conn.cursor() as cur:
        cur.execute("select final_through from swiperec_private.monitoring_state"
                    " where bucket_seconds = %s", (b.seconds,))  # fmt: skip
        row = cur.fetchone()
        if row:
            start = row[0]
        else:
            cur.execute("select min(created_at) from public.served_recommendations")
            first = cur.fetchone()[0]
            start = floor_to_bucket(first, b.seconds) if first else floor_to_bucket(now, b.seconds)
    conn.rollback()
    analyze_changed_partitions(conn, start, now)
    final_before = now - timedelta(seconds=b.attribution_seconds)
    final_through = start
    bucket = start
    params = {"attribution": b.attribution_seconds, "session_gap": b.session_gap_seconds,
              "new_user_days": b.new_user_days, "new_video_days": b.new_video_days}  # fmt: skip
    while bucket <= now:
        end = bucket + size
        with conn, conn.cursor() as cur:
            cur.execute(METRICS_SQL, {**params, "start": bucket, "end": end})
            rows = cur.fetchall()
            cur.execute("delete from public.monitoring_metrics where bucket_seconds = %s"
                        " and bucket_start = %s", (b.seconds, bucket))  # fmt: skip
            if rows:
                from psycopg2.extras import execute_values

                execute_values(
                    cur,
                    "insert into public.monitoring_metrics (bucket_seconds, bucket_start,"
                    " model_version, route, segment, metric, value, samples) values %s",
                    [(b.seconds, bucket, *r) for r in rows],
                )
            if end <= final_before:
                final_through = end
                cur.execute(
                    "insert into swiperec_private.monitoring_state (bucket_seconds, final_through)"
                    " values (%s, %s) on conflict (bucket_seconds) do update"
                    " set final_through = excluded.final_through, updated_at = now()",
                    (b.seconds, final_through),
                )
        summary.buckets.append(bucket)
        summary.rows += len(rows)
        bucket = end
    summary.final_through = final_through


def analyze_changed_partitions(conn, since: datetime, now: datetime) -> list[str]:
    """ANALYZE the serving logs' day partitions from `since`'s day to `now`'s that were never
    analyzed or changed by more than 1 % since their statistics; returns their names.

    The buckets a pass computes are the newest, and their rows arrived after the partition's
    last statistics (autovacuum analyzes it only once a tenth of it has changed), so the
    planner would plan the newest hour on statistics that do not count it: up to 0.5-0.8 s a
    bucket at 1M served rows, against 0.06 s analyzed. Sampling a day's partition costs a
    fraction of one bucket's query; the 1 % keeps a pass every minute from sampling today's
    partition every time. A partition another ANALYZE or a VACUUM holds is skipped."""
    from psycopg2 import sql

    days = []
    day, last = since.astimezone(UTC).date(), now.astimezone(UTC).date()
    while day <= last:
        days.append(day.strftime("%Y%m%d"))
        day += timedelta(days=1)
    names = [table.split(".")[1] + "_" + d for table in LOGS for d in days]
    with conn, conn.cursor() as cur:
        cur.execute(
            "select relname from pg_stat_user_tables where schemaname = 'swiperec_private'"
            " and relname = any(%s) and (n_mod_since_analyze > 0.01 * n_live_tup"
            " or coalesce(last_analyze, last_autoanalyze) is null) order by relname",
            (names,),
        )
        stale = [row[0] for row in cur.fetchall()]
        for name in stale:
            cur.execute(
                sql.SQL("analyze (skip_locked) {}").format(sql.Identifier("swiperec_private", name))
            )
    return stale


def floor_to_bucket(moment: datetime, seconds: int) -> datetime:
    """The start of the bucket holding `moment` (buckets are aligned to the Unix epoch)."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)
