"""The installed package stands on its own: the wheel holds the files the package reads from the
rest of the project, equal to their sources, and the installed package imports from the
virtualenv, not from the checkout. `test_pipeline.py` runs the demo and the pipeline with it."""

import subprocess
import zipfile

import pytest

from tests.installed import ROOT

pytestmark = pytest.mark.integration


def test_the_wheel_ships_the_migrations_functions_and_pipeline_as_in_the_source(installed):
    prefix = "swiperec/resources/"
    with zipfile.ZipFile(installed.wheel) as archive:
        shipped = {
            name.removeprefix(prefix): archive.read(name)
            for name in archive.namelist()
            if name.startswith(prefix) and not name.endswith(".py")
        }
    sources = {
        f"migrations/{p.name}": p.read_bytes()
        for p in (ROOT / "supabase" / "migrations").glob("*.sql")
    }
    functions = ROOT / "supabase" / "functions"
    sources.update(
        (f"functions/{p.relative_to(functions)}", p.read_bytes())
        for pattern in ("*/*.ts", "*/*.json", "*/*.toml")
        for p in functions.glob(pattern)
    )
    compiled = ROOT / "pipelines" / "compiled" / "two_tower_training.yaml"
    sources[compiled.name] = compiled.read_bytes()
    assert shipped == sources, (
        "the wheel's copies differ from supabase/migrations, supabase/functions or the YAML"
    )


def test_the_installed_package_is_the_wheels(installed, tmp_path):
    found = subprocess.run(
        [str(installed.python), "-c", "import swiperec.resources as r; print(r.__file__); "
         "print(r.resource_path('migrations')); print(r.resource_path(r.EDGE_FUNCTION))"],
        capture_output=True, text=True, check=True, cwd=installed.elsewhere,
        env=installed.env(tmp_path),
    ).stdout.split()  # fmt: skip
    for path in found:
        assert "site-packages" in path and str(ROOT) not in path, path
