"""A Beam pipeline from runner options, the same way for every Beam step (transform, writer).

    pipeline = new_pipeline(["--runner=DataflowRunner", "--project=P", ...])
    pipeline = new_pipeline([])   # this machine: Beam's in-process FnApiRunner

Without `--runner`, Beam's DirectRunner would first try its Prism runner, which downloads a
binary at run time; the in-process FnApiRunner is what it falls back to, and it takes the same
options (`--direct_num_workers=2 --direct_running_mode=multi_processing` for two processes).
With `--runner=...` (Dataflow, Flink, Spark), Beam picks the runner from the options.
"""

from __future__ import annotations


def new_pipeline(pipeline_args: list[str] | None = None):
    """A `beam.Pipeline` for `pipeline_args` (Beam's command-line options)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(pipeline_args or [])
    runner = None
    if not any(arg.startswith("--runner") for arg in args):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
    return beam.Pipeline(runner=runner, options=PipelineOptions(args))
