"""The one version string: package version, image tags, and the images in compiled pipelines."""

__version__ = "0.1.0"

IMAGE_REGISTRY = "ghcr.io/swiperec"
PIPELINE_IMAGE = f"{IMAGE_REGISTRY}/pipeline:{__version__}"
SERVING_IMAGE = f"{IMAGE_REGISTRY}/serving:{__version__}"
