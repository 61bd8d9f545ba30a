"""KFP component: one pass of the rollout controller (a step of the monitoring pipeline)."""

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def rollout_tick(database_url: str = "") -> str:
    """Runs `swiperec.pipeline.steps.rollout_tick`: for every running rollout, hold, advance,
    complete or roll back on the evidence of its current stage; an A/B test past its maximum
    duration ends. Returns the decisions, one line each.

    database_url: "" uses DATABASE_URL of the step's environment (on a cluster, a secret).
    """
    from swiperec.pipeline import steps

    decisions = steps.rollout_tick(database_url=database_url)
    lines = [f"{d['experiment']}: {d['action']} ({d['reason']})" for d in decisions]
    for line in lines:
        print(line)
    return "\n".join(lines)
