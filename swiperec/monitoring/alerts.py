"""Alert rules over the metrics: evaluation, storage, delivery to a webhook.

A rule (see `default.toml`) looks at one series (metric, model version, route, segment) in the
settled buckets: those that ended `settle_seconds` ago, whose outcomes have had time to arrive.
A bucket with fewer than `min_samples` is skipped; a relative rule compares the bucket with the
mean of the `baseline_buckets` buckets before it that had enough samples, and needs at least
`min_baseline_buckets` of them. A fired alert is stored once (per rule, bucket, series) and the
series stays quiet for `cooldown_buckets` buckets. Alerts are posted to the webhook in
`SWIPEREC_ALERT_WEBHOOK_URL` as Slack-compatible JSON (`{"text": ...}`); one that could not be
delivered is retried by the next pass.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

from swiperec.monitoring.config import AlertRule, MonitoringConfig

log = logging.getLogger(__name__)
WEBHOOK_ENV = "SWIPEREC_ALERT_WEBHOOK_URL"
_LOOKBACK_BUCKETS = 48  # how far back a pass evaluates settled buckets


def evaluate(conn, config: MonitoringConfig, now: datetime, deliver=None) -> list[dict]:
    """Evaluate every rule on the recently settled buckets; store, deliver and return the
    alerts fired in this pass."""
    size = config.buckets.seconds
    settled_before = now - timedelta(seconds=config.buckets.settle_seconds)
    fired = []
    for rule in config.alerts:
        history = _series(conn, rule, size, now)
        for i, (bucket, value, samples) in enumerate(history):
            if bucket + timedelta(seconds=size) > settled_before:
                break
            if bucket < now - timedelta(seconds=size * _LOOKBACK_BUCKETS):
                continue
            if value is None or samples < rule.min_samples:
                continue
            baseline = None
            if rule.kind.startswith("relative"):
                since = bucket - timedelta(seconds=size * rule.baseline_buckets)
                earlier = [v for b, v, n in history[:i]
                           if v is not None and n >= rule.min_samples and b >= since]  # fmt: skip
                if len(earlier) < rule.min_baseline_buckets:
                    continue
                baseline = sum(earlier) / len(earlier)
            if not _breaks(rule, value, baseline):
                continue
            if _cooling_down(conn, rule, size, bucket):
                continue
            alert = _store(conn, rule, size, bucket, value, baseline, samples)
            if alert is not None:
                fired.append(alert)
    deliver = deliver or deliver_from_env
    _deliver_pending(conn, deliver)
    return fired


def _series(conn, rule: AlertRule, size: int, now: datetime) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(
            "select bucket_start, value, samples from public.monitoring_metrics"
            " where bucket_seconds = %s and metric = %s and model_version = %s and route = %s"
            " and segment = %s and bucket_start >= %s order by bucket_start",
            (size, rule.metric, rule.model_version, rule.route, rule.segment,
             now - timedelta(seconds=size * (_LOOKBACK_BUCKETS + rule.baseline_buckets + 1))),
        )  # fmt: skip
        rows = cur.fetchall()
    conn.rollback()
    return rows


def _breaks(rule: AlertRule, value: float, baseline: float | None) -> bool:
    if rule.kind == "below":
        return value < rule.threshold
    if rule.kind == "above":
        return value > rule.threshold
    if rule.kind == "above_abs":
        return abs(value) > rule.threshold
    if baseline is None or baseline == 0:
        return False
    change = (value - baseline) / abs(baseline)
    return change < -rule.threshold if rule.kind == "relative_drop" else change > rule.threshold


def _cooling_down(conn, rule: AlertRule, size: int, bucket: datetime) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "select 1 from public.monitoring_alerts where rule = %s and bucket_seconds = %s"
            " and model_version = %s and route = %s and segment = %s"
            " and bucket_start < %s and bucket_start >= %s limit 1",
            (rule.name, size, rule.model_version, rule.route, rule.segment, bucket,
             bucket - timedelta(seconds=size * rule.cooldown_buckets)),
        )  # fmt: skip
        cooling = cur.fetchone() is not None
    conn.rollback()
    return cooling


def _message(rule: AlertRule, bucket: datetime, value: float, baseline: float | None) -> str:
    series = f"{rule.metric} ({rule.segment}; version {rule.model_version}, route {rule.route})"
    when = bucket.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if baseline is None:
        return (f"[{rule.severity}] {rule.name}: {series} is {value:.4g} in the bucket of {when}"
                f" ({rule.kind} {rule.threshold:g})")  # fmt: skip
    change = (value - baseline) / abs(baseline)
    return (f"[{rule.severity}] {rule.name}: {series} is {value:.4g} in the bucket of {when},"
            f" {change:+.0%} against the trailing mean {baseline:.4g}")  # fmt: skip


def _store(conn, rule, size, bucket, value, baseline, samples) -> dict | None:
    message = _message(rule, bucket, value, baseline)
    with conn, conn.cursor() as cur:
        cur.execute(
            "insert into public.monitoring_alerts (rule, severity, bucket_seconds, bucket_start,"
            " model_version, route, segment, metric, value, baseline, samples, message)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " on conflict do nothing returning id, fired_at",
            (rule.name, rule.severity, size, bucket, rule.model_version, rule.route,
             rule.segment, rule.metric, value, baseline, samples, message),
        )  # fmt: skip
        row = cur.fetchone()
    if row is None:
        return None  # fired by an earlier pass
    log.warning("alert: %s", message)
    return {"id": row[0], "rule": rule.name, "severity": rule.severity, "bucket_start": bucket,
            "metric": rule.metric, "value": value, "baseline": baseline, "samples": samples,
            "message": message}  # fmt: skip


def _deliver_pending(conn, deliver) -> None:
    with conn.cursor() as cur:
        cur.execute("select id, rule, severity, message from public.monitoring_alerts"
                    " where delivered_at is null order by id limit 100")  # fmt: skip
        pending = cur.fetchall()
    conn.rollback()
    for alert_id, rule, severity, message in pending:
        try:
            delivered = deliver({"id": alert_id, "rule": rule, "severity": severity,
                                 "message": message})  # fmt: skip
            error = None
        except Exception as err:  # a webhook outage must not fail (or stall) the pass
            delivered, error = False, f"{type(err).__name__}: {err}"[:500]
        with conn, conn.cursor() as cur:
            if delivered:
                cur.execute("update public.monitoring_alerts set delivered_at = now(),"
                            " delivery_error = null where id = %s", (alert_id,))  # fmt: skip
            elif error:
                cur.execute("update public.monitoring_alerts set delivery_error = %s"
                            " where id = %s", (error, alert_id))  # fmt: skip
        if error:
            break  # the webhook is down: the rest wait for the next pass


def deliver_from_env(alert: dict) -> bool:
    """POST the alert to `SWIPEREC_ALERT_WEBHOOK_URL` (Slack-compatible `{"text": ...}`);
    False when no webhook is configured (the alert stays undelivered, listed by
    `swiperec monitor alerts`). Raises on a failed delivery."""
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        return False
    import httpx

    response = httpx.post(url, json={"text": f"swiperec: {alert['message']}"}, timeout=5)
    response.raise_for_status()
    return True


def list_alerts(conn, limit: int = 50) -> list[dict]:
    """The latest alerts, newest first."""
    with conn.cursor() as cur:
        cur.execute("select id, fired_at, rule, severity, bucket_start, model_version, route,"
                    " segment, metric, value, baseline, samples, message, delivered_at,"
                    " delivery_error from public.monitoring_alerts order by id desc limit %s",
                    (limit,))  # fmt: skip
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    return rows
