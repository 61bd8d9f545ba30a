"""The training pipeline around the steps: what each KFP component records about its own run,
compiling the pipeline, running it locally with KFP's local runner, submitting it to a cluster.
The pipeline itself is defined in `pipelines/training_pipeline.py`."""
