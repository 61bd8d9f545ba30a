"""The training pipeline's steps and its runs: `steps.py` holds one function per step (what
the KFP components in `components/` and the one-step CLI commands call), `kfp_artifacts.py` what
every component does with its artifacts, `run.py` running the compiled pipeline locally with
KFP's local runner or submitting it to a cluster. The pipeline itself is defined beside the
package, in `pipelines/training_pipeline.py`."""
