"""KFP components, one file each and thin: each calls one step function of
`swiperec.pipeline.steps` with the locations of its declared input and output artifacts and its
parameters, and copies the step's metadata onto its outputs (`swiperec.pipeline.kfp_artifacts`).

They are lightweight components on the project's own image (`swiperec.version.PIPELINE_IMAGE`),
so the local runner runs the same code a cluster runs; the image already holds kfp at the
pinned version, so components do not pip-install it at start. This folder is the KFP side of
the project: it imports `swiperec`, and `swiperec` never imports it."""
