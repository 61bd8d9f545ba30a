"""Run the compiled training pipeline with KFP's local runner, or submit it to a cluster.

    run_local({"epochs": 5}, pipeline_root="runs/")  # every step a local subprocess
    submit("https://kfp.example.com", {"activate": False})

The compiled YAML is what runs everywhere: `run_local` and `submit` load the copy this package
ships (`swiperec.resources`), so a local run exercises exactly what a cluster would run.
Compiling is a developer's action in a source checkout (`make compile`, i.e.
`python -m pipelines compile`): the pipeline and its components live beside the package in
`pipelines/` and `components/`, and the package never imports them.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from swiperec.errors import SwiperecError
from swiperec.registry.versions import new_version_name
from swiperec.resources import PIPELINE_YAML, resource_path

COMPILED = resource_path(PIPELINE_YAML)


class PipelineError(SwiperecError):
    """The pipeline cannot be run or submitted as asked."""


def pipeline_parameters(package: str | Path = COMPILED) -> dict[str, dict]:
    """The compiled pipeline's parameters: name -> {"type", "default"}."""
    import yaml

    spec = yaml.safe_load(Path(package).read_text())
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    out = {}
    for name, p in inputs.items():
        default = p.get("defaultValue")
        if p["parameterType"] == "NUMBER_INTEGER" and default is not None:
            default = int(default)  # the YAML's JSON numbers come back as floats
        out[name] = {"type": p["parameterType"], "default": default}
    return out


def check_arguments(arguments: dict, package: str | Path = COMPILED) -> dict:
    """`arguments` checked against the pipeline's parameters: unknown names and values of the
    wrong type are refused with the list of what the pipeline takes."""
    known = pipeline_parameters(package)
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise PipelineError(
            f"unknown pipeline parameter(s) {', '.join(unknown)}; the pipeline takes: "
            + ", ".join(sorted(known))
        )
    kinds = {"STRING": str, "BOOLEAN": bool, "NUMBER_INTEGER": int,
             "NUMBER_DOUBLE": (int, float), "LIST": list, "STRUCT": dict}  # fmt: skip
    checked = {}
    for name, value in arguments.items():
        kind = kinds.get(known[name]["type"], object)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise PipelineError(
                f"pipeline parameter {name} takes {known[name]['type'].lower()}, got {value!r}"
            )
        # KFP refuses an int for a float parameter: 3 means 3.0.
        checked[name] = float(value) if known[name]["type"] == "NUMBER_DOUBLE" else value
    return checked


@dataclass(frozen=True)
class LocalRun:
    model_version: str
    pipeline_root: str
    log: str
    seconds: float


def run_local(
    arguments: dict,
    pipeline_root: str | Path,
    package: str | Path = COMPILED,
    echo: TextIO | None = None,
) -> LocalRun:
    """Run the compiled pipeline on this machine with `kfp.local.SubprocessRunner`: each step
    a subprocess of this Python environment, artifacts under `pipeline_root`. The runner's
    full output goes to `pipeline_root/<model version>.log`; `echo` (if given) gets one line per
    finished step. A step that fails stops the run (the steps after it do not run; serving is
    untouched) and raises PipelineError naming the log."""
    import contextlib
    import time
    import warnings

    from kfp import components, local

    arguments = dict(arguments)
    arguments.setdefault("model_version", new_version_name())
    arguments = check_arguments(arguments, package)
    root = Path(pipeline_root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / f"{arguments['model_version']}.log"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)  # fmt: skip
    pipeline = components.load_component_from_file(str(package))
    started = time.perf_counter()
    with open(log_path, "w") as log, warnings.catch_warnings():
        # Resource requests are for clusters; the local runner says it ignores them.
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
        steps = _StepEcho(log, echo, started)
        try:
            with contextlib.redirect_stdout(steps), contextlib.redirect_stderr(log):
                task = pipeline(**arguments)
        except RuntimeError as err:  # kfp.local reports a failed step this way
            log.flush()
            cause = _last_error(log_path)
            raise PipelineError(
                f"the pipeline failed: {err}"
                + (f"\n  {cause}" if cause else "")
                + f"\n  full output: {log_path}"
            ) from err
    return LocalRun(task.output, str(root), str(log_path),
                    round(time.perf_counter() - started, 1))  # fmt: skip


def _last_error(log_path: Path) -> str | None:
    """The last exception line a step printed (`SomethingError: what went wrong`), if any."""
    found = None
    for line in Path(log_path).read_text(errors="replace").splitlines():
        match = re.match(r"\s*([\w.]+(?:Error|Exception)): (.+)", line)
        if match:
            found = f"{match.group(1)}: {match.group(2).strip()}"
    return found


class _StepEcho(io.TextIOBase):
    """Everything to the log; to `echo`, one line per step the runner reports finished."""

    _FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
    _ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, log: TextIO, echo: TextIO | None, started: float):
        self.log, self.echo, self.last = log, echo, started
        self.pending = ""

    def write(self, text: str) -> int:
        import time

        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            found = self._FINISHED.search(self._ANSI.sub("", line))
            if found and self.echo is not None:
                now = time.perf_counter()
                name, status = found.groups()
                self.echo.write(f"  {name:<20} {status.lower():<8} {now - self.last:6.1f} s\n")
                self.echo.flush()
                self.last = now
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def submit(
    host: str,
    arguments: dict,
    package: str | Path = COMPILED,
    experiment: str = "swiperec",
    run_name: str | None = None,
    namespace: str | None = None,
) -> str:
    """Submit the compiled pipeline to a Kubeflow Pipelines endpoint; returns the run id."""
    import kfp

    arguments = check_arguments(arguments, package)
    client = kfp.Client(host=host, namespace=namespace)
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments,
        run_name=run_name or f"two-tower-training {new_version_name()}",
        experiment_name=experiment,
        namespace=namespace,
    )
    return run.run_id


def parse_arguments(pairs: list[str], package: str | Path = COMPILED) -> dict:
    """`name=value` pairs into pipeline arguments. Text parameters take the value as written;
    the others take JSON (numbers, true/false, lists such as ["--runner=DataflowRunner"])."""
    known = pipeline_parameters(package)
    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise PipelineError(f"expected name=value, got {pair!r}")
        if name in known and known[name]["type"] == "STRING":
            arguments[name] = text
            continue
        try:
            arguments[name] = json.loads(text)
        except json.JSONDecodeError:
            raise PipelineError(
                f"{name}={text}: not a JSON value (numbers, true/false, or a list such as "
                '["--runner=DataflowRunner"])'
            ) from None
    return check_arguments(arguments, package)
