"""The one version string: package version, image tags, and the images in compiled pipelines."""

__version__ = "0.1.0"
