"""The monitoring pipeline: one monitoring pass and, beside it, one pass of the rollout
controller, for a recurring run on a cluster (every few minutes; a pass recomputes only the
buckets whose outcomes can still change, two passes take turns, and a controller decision acts
once however many ticks race). Compiled by `python -m pipelines compile` into
compiled/monitoring.yaml.

    client.create_recurring_run(experiment_id=..., job_name="swiperec-monitoring",
                                cron_expression="0 */5 * * * *", max_concurrency=1,
                                pipeline_package_path="pipelines/compiled/monitoring.yaml")
"""

from kfp import dsl

from components.monitor import monitor
from components.rollout_tick import rollout_tick

PIPELINE_NAME = "swiperec-monitoring"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Recommendation-quality metrics and alerts; the rollout controller.",
)
def monitoring(config: str = "", database_url: str = ""):
    """config: a monitoring TOML file the step can read ("" the packaged rules); database_url:
    "" uses the step's DATABASE_URL (a secret on a cluster)."""
    task = monitor(config=config, database_url=database_url)
    task.set_caching_options(False)  # every run reads the database as it is now
    task.set_cpu_limit("1").set_memory_limit("2G")
    # Independent of the monitoring pass: a failed pass must not stop an automatic rollback.
    tick = rollout_tick(database_url=database_url)
    tick.set_caching_options(False)
    tick.set_cpu_limit("1").set_memory_limit("2G")
