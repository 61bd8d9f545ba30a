"""KFP components: one file each, thin. Each reads its artifacts, makes one swiperec call and
writes its outputs and metadata. They are lightweight components on the project's own image
(`swiperec.version.PIPELINE_IMAGE`), so the local runner runs the same code the cluster runs."""
