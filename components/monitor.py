"""KFP component: one recommendation-quality monitoring pass (the monitoring pipeline's step)."""

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def monitor(metrics: dsl.Output[dsl.Metrics], config: str = "", database_url: str = ""):
    """Runs `swiperec.pipeline.steps.monitor`: the metrics of every bucket not final yet, the
    alert rules, the partitions of the serving logs. Logs the pass's figures on `metrics`.

    config: a monitoring TOML file readable by the step ("" the packaged rules).
    database_url: "" uses DATABASE_URL of the step's environment (on a cluster, a secret).
    """
    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import log_metrics

    outcome = steps.monitor(config=config, database_url=database_url)
    log_metrics(metrics, {k: v for k, v in outcome.items() if isinstance(v, int | float)})
    for message in outcome["alerts"]:
        print(f"alert: {message}")
