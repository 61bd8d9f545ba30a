# The image every KFP component of swiperec runs in (swiperec.version.PIPELINE_IMAGE).
#
# Components are lightweight @dsl.component functions whose bodies import swiperec, so this image
# holds the package and the whole verified stack, pinned by requirements/constraints.txt. Build it
# from the repository root with the version of swiperec/version.py (cloudbuild.yaml does this):
#
#   docker build -f images/pipeline.Dockerfile --build-arg VERSION=0.1.0 \
#     -t ghcr.io/swiperec/pipeline:0.1.0 .
#
# One build stage on purpose (the first FROM below only lends Beam's boot): every dependency is
# a wheel or a pure-Python sdist (no compilers or -dev packages to leave behind), and keeping the dependencies in their own layer means a code-only
# change pushes and pulls a few MB instead of the multi-GB stack.
#
# The same image is the Beam steps' SDK worker image (Dataflow's --sdk_container_image, a Flink
# task manager's worker-pool sidecar): it carries Beam's boot, from Beam's own SDK image of the
# pinned Beam and Python, as its entrypoint. KFP sets each component's command, which replaces
# the entrypoint.
FROM apache/beam_python3.11_sdk:2.77.0 AS beam

FROM python:3.11.17-slim-bookworm

# No default: the tag and the label must be swiperec/version.py's version (checked below).
ARG VERSION

LABEL org.opencontainers.image.title="swiperec-pipeline" \
      org.opencontainers.image.description="swiperec and its pinned stack, for the KFP components" \
      org.opencontainers.image.version="${VERSION}"

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# libgomp1: the OpenMP runtime of the `implicit` wheel (the evaluator's matrix-factorisation
# baseline); every other native library ships inside its wheel. The Debian package is not pinned
# to a version (DL3008): the base tag fixes the release (bookworm), and an exact Debian pin breaks
# the build as soon as a security update replaces that version on the mirror.
# The user has a fixed numeric id, so Kubernetes' runAsNonRoot can verify it. /gcs, /minio and /s3
# are where the KFP launcher puts artifacts: recent KFP backends mount emptyDirs there, older ones
# need the folders to exist and be writable by the user.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 swiperec \
    && useradd --system --no-log-init --uid 10001 --gid swiperec \
       --home-dir /home/swiperec --create-home --shell /usr/sbin/nologin swiperec \
    && mkdir -p /gcs /minio /s3 \
    && chown swiperec:swiperec /gcs /minio /s3

# Beam's boot, in a layer of its own that code changes do not rebuild. Its workers run this
# image's Python with the package already installed: no virtualenv (which boot would create
# under /opt/apache, not writable by the user below).
COPY --from=beam /opt/apache/beam /opt/apache/beam
ENV RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1

WORKDIR /opt/swiperec

# Refuse a missing or wrong VERSION before anything expensive runs.
COPY swiperec/version.py swiperec/version.py
RUN test -n "${VERSION}" \
       || { echo "build with --build-arg VERSION=<__version__ of swiperec/version.py>" >&2; exit 1; } \
    && python -c 'import os, runpy, sys; \
v = runpy.run_path("swiperec/version.py")["__version__"]; arg = os.environ["VERSION"]; \
sys.exit(None if v == arg else f"--build-arg VERSION={arg}, but swiperec/version.py says {v}")'

# The dependencies, in their own layer: with only version.py present the package is empty, so
# this installs exactly setup.py's install_requires at the constraints' pins, and is rebuilt only
# when setup.py, the constraints or the version change.
COPY requirements/constraints.txt requirements/constraints.txt
COPY setup.py ./
RUN pip install --no-cache-dir -c requirements/constraints.txt .

# Then the package itself (its dependencies are already there, at the same pins), with the
# files it ships: swiperec/resources/ links to the migrations and the compiled pipeline, so the
# package installed here holds copies of them.
COPY supabase/migrations/ supabase/migrations/
COPY pipelines/compiled/two_tower_training.yaml pipelines/compiled/two_tower_training.yaml
COPY swiperec/ swiperec/
RUN pip install --no-cache-dir --no-deps --force-reinstall -c requirements/constraints.txt . \
    && pip check

WORKDIR /home/swiperec
USER 10001:10001

# A Beam SDK worker: `docker run IMAGE --worker_pool` serves a worker pool on port 50000 (the
# EXTERNAL environment of a Flink task manager). KFP components set their own command.
ENTRYPOINT ["/opt/apache/beam/boot"]
