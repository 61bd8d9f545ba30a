"""Beam's local runner made to start a pipeline's stages in an order the test chooses.

The runner (`FnApiRunner`) queues the stages in the order its `sort_stages` picks among the
valid ones, which can differ from one process to the next, and the first of two independent
stages delivers its output first. A pipeline whose output depends on that order gives
different results on different runs of the same input: this orders the independent stages by
name, ascending or descending, so a test can run both ways.

    with stages_by_name(descending=True):
        run_transform(...)

`python -m tests.integration.stage_order descending ARGS...` runs `swiperec ARGS...` the same
way, in a process of its own.
"""

from __future__ import annotations

import contextlib
import sys


def _by_name(original, descending: bool):
    def sort_stages(stages, context):
        valid = original(stages, context)
        at = {stage: i for i, stage in enumerate(valid)}
        producers = {
            pcoll: stage
            for stage in valid
            for transform in stage.transforms
            for pcoll in transform.outputs.values()
        }
        # What `sort_stages` honours: a stage's `must_follow` and the producers of its inputs,
        # each among the stages and before it in the valid order.
        needs = {
            stage: {
                other
                for other in {*stage.must_follow}
                | {
                    producers[pcoll]
                    for transform in stage.transforms
                    for pcoll in transform.inputs.values()
                    if pcoll in producers
                }
                if other in at and at[other] < at[stage]
            }
            for stage in valid
        }
        done, ordered = set(), []
        while len(ordered) < len(valid):
            ready = [stage for stage in valid if stage not in done and needs[stage] <= done]
            pick = (max if descending else min)(ready, key=lambda stage: stage.name)
            done.add(pick)
            ordered.append(pick)
        return ordered

    return sort_stages


@contextlib.contextmanager
def stages_by_name(descending: bool):
    """Within the block, the local runner runs independent stages by name."""
    from apache_beam.runners.portability.fn_api_runner import translations

    original = translations.sort_stages
    translations.sort_stages = _by_name(original, descending)
    try:
        yield
    finally:
        translations.sort_stages = original


if __name__ == "__main__":
    from swiperec.cli import main

    order, *args = sys.argv[1:]
    if order not in ("ascending", "descending"):
        sys.exit("usage: python -m tests.integration.stage_order ascending|descending ARGS...")
    with stages_by_name(descending=order == "descending"):
        sys.exit(main(args))
