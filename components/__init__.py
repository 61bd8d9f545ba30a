"""KFP components: one file each, thin. Each reads its artifacts, makes one swiperec call and
writes its outputs and metadata. They are lightweight components on the project's own image
(`swiperec.version.PIPELINE_IMAGE`), so the local runner runs the same code the cluster runs. The
image already holds kfp at the pinned version, so components do not pip-install it at start.

Every component stamps its outputs with its start and end times and peak memory
(`swiperec.pipeline.steps`); `register` turns them into the registry's lineage."""
