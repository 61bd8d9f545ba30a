"""The KFP side of the project: the training pipeline definition and `compiled/`, its committed
YAML (`python -m pipelines compile`). Imports `components` and `swiperec`; never imported by
`swiperec`."""
