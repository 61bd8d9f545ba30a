# The Python serving side (swiperec.version.SERVING_IMAGE): loads the exported SavedModel towers of
# every model version in use to embed new swipes and new videos as they happen. By default it runs
# the real-time endpoint (`swiperec realtime serve`: POST /embed/user, /embed/video, GET /healthz,
# /metrics on port 8080); the same image runs the real-time worker, which needs no inbound port:
#
#   docker run -p 8080:8080 -e DATABASE_URL=postgresql://... -e SWIPEREC_REALTIME_TOKEN=... \
#     ghcr.io/swiperec/serving:0.1.0
#   docker run -e DATABASE_URL=postgresql://... ghcr.io/swiperec/serving:0.1.0 \
#     realtime run --metrics-port 9100
#   docker run --rm -e DATABASE_URL=postgresql://... ghcr.io/swiperec/serving:0.1.0 embeddings status
#
# Build from the repository root with the version of swiperec/version.py (cloudbuild.yaml does this):
#
#   docker build -f images/serving.Dockerfile --build-arg VERSION=0.1.0 \
#     -t ghcr.io/swiperec/serving:0.1.0 .
#
# Same base, same pins and same layering as images/pipeline.Dockerfile. One stage on purpose: no
# build tools are installed, so a build stage would leave nothing behind, and it would merge the
# multi-GB dependency layer with the code layer, so every code change would push it again.
FROM python:3.11.17-slim-bookworm

# No default: the tag and the label must be swiperec/version.py's version (checked below).
ARG VERSION

LABEL org.opencontainers.image.title="swiperec-serving" \
      org.opencontainers.image.description="swiperec's serving side: the exported towers and the swiperec command" \
      org.opencontainers.image.version="${VERSION}"

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# libgomp1: the OpenMP runtime of the `implicit` wheel; every other native library ships inside
# its wheel. Not pinned to a Debian version (DL3008): the base tag fixes the release (bookworm),
# and an exact pin breaks the build as soon as a security update replaces it on the mirror.
# The user has a fixed numeric id, so Kubernetes' runAsNonRoot can verify it.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 swiperec \
    && useradd --system --no-log-init --uid 10001 --gid swiperec \
       --home-dir /home/swiperec --create-home --shell /usr/sbin/nologin swiperec

WORKDIR /opt/swiperec

# Refuse a missing or wrong VERSION before anything expensive runs.
COPY swiperec/version.py swiperec/version.py
RUN test -n "${VERSION}" \
       || { echo "build with --build-arg VERSION=<__version__ of swiperec/version.py>" >&2; exit 1; } \
    && python -c 'import os, runpy, sys; \
v = runpy.run_path("swiperec/version.py")["__version__"]; arg = os.environ["VERSION"]; \
sys.exit(None if v == arg else f"--build-arg VERSION={arg}, but swiperec/version.py says {v}")'

# The dependencies, in their own layer (see images/pipeline.Dockerfile).
COPY requirements/constraints.txt requirements/constraints.txt
COPY setup.py ./
RUN pip install --no-cache-dir -c requirements/constraints.txt .

# The package, with the files it ships: swiperec/resources/ links to the migrations and the
# compiled pipeline, so the wheel built here holds copies of them.
COPY supabase/migrations/ supabase/migrations/
COPY pipelines/compiled/two_tower_training.yaml pipelines/compiled/two_tower_training.yaml
COPY swiperec/ swiperec/
RUN pip install --no-cache-dir --no-deps --force-reinstall -c requirements/constraints.txt . \
    && pip check

# The working folder is the user's home, so the embedded server's default data folder
# (.swiperec/, used only when DATABASE_URL is unset) is writable.
WORKDIR /home/swiperec
USER 10001:10001

EXPOSE 8080
ENTRYPOINT ["swiperec"]
CMD ["realtime", "serve", "--host", "0.0.0.0", "--port", "8080"]
