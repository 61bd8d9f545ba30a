"""Run a compiled KFP v2 pipeline the way a cluster runs it: every step on its own.

On Kubeflow (MinIO/S3) or Vertex, each step runs in its own pod. The pod's launcher downloads
copies of the step's *declared* input artifacts from object storage into a fresh local folder,
runs the component, then uploads its output artifacts. Nothing of an earlier step's folder
exists in that pod. KFP's local `SubprocessRunner` runs every step on one shared filesystem
instead, so a step that opens a path recorded inside an earlier artifact (rather than an input
it declares) passes locally and breaks on a cluster. `run_isolated` runs the steps like a
cluster does, so such a step fails here too:

    run = run_isolated("pipelines/compiled/two_tower_training.yaml", {"epochs": 1},
                       store=tmp / "store", workdir=tmp / "work", env={...})
    run.tasks  # ["ingest-snapshot", "feature-transform", ...], in the order they ran

- `store` stands in for the object store: each output artifact is copied there after its step.
- Each step runs in a new, empty folder (its cwd, HOME and TMPDIR) holding copies of its
  declared input artifacts only, and is deleted when the step succeeds (a failed step's folder
  is kept for inspection; the error names its log). Artifact URIs point at these copies, so a
  path recorded by an earlier step never exists any more, even for an artifact the step does
  declare: a step reads its inputs through their artifacts, never through a recorded path.
- A step's environment is `env` (the image's and the pod's variables) plus PATH, HOME and
  TMPDIR; nothing else of this process's environment reaches it.
- dsl.If / dsl.Else branches run or are skipped by their `triggerPolicy.condition`.

It covers what lightweight Python components with nested condition DAGs need (task outputs,
pipeline parameters, `{{$.pipeline_job_...}}` placeholders), not loops, exit handlers,
importers, retries or caching. kfp.local's own helpers build the executor input, resolve the
placeholders and read the executor output, so the format is exactly the one kfp writes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from kfp import components, dsl
from kfp.local import (
    executor_input_utils,
    executor_output_utils,
    graph_utils,
    io,
    placeholder_utils,
    utils,
)
from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils
from kfp.pipeline_spec import pipeline_spec_pb2


class IsolatedStepError(RuntimeError):
    """A step of the pipeline exited with an error."""


@dataclass
class IsolatedRun:
    run_id: str  # what `{{$.pipeline_job_uuid}}` resolved to
    logs: Path  # one <task>.log per step: its stdout and stderr
    tasks: list[str] = field(default_factory=list)  # the steps that ran, in order
    outputs: dict[str, dict] = field(default_factory=dict)  # task -> its outputs (in the store)
    seconds: dict[str, float] = field(default_factory=dict)  # task -> wall time
    pipeline_outputs: dict = field(default_factory=dict)  # what the pipeline returns


def run_isolated(
    package_path: str | Path,
    arguments: dict,
    store: Path,
    workdir: Path,
    env: dict[str, str] | None = None,
) -> IsolatedRun:
    """Run the pipeline in `package_path` with `arguments` (its parameters, as `kfp.Client`
    takes them). Raises IsolatedStepError naming the first step that fails."""
    spec = components.load_component_from_file(str(package_path)).pipeline_spec
    run = IsolatedRun(run_id=str(uuid.uuid4()), logs=Path(workdir) / "logs")
    run.logs.mkdir(parents=True, exist_ok=True)
    runner = _Runner(spec, run, Path(store) / run.run_id, Path(workdir), dict(env or {}))
    run.pipeline_outputs = runner.run_dag(spec.root, arguments)
    return run


class _Runner:
    def __init__(self, spec: pipeline_spec_pb2.PipelineSpec, run: IsolatedRun, store: Path,
                 workdir: Path, env: dict[str, str]):  # fmt: skip
        self.spec, self.run, self.store, self.workdir, self.env = spec, run, store, workdir, env

    def run_dag(self, dag: pipeline_spec_pb2.ComponentSpec, arguments: dict) -> dict:
        """Run one DAG (the root, or a condition's sub-DAG) and return its outputs.

        Values flow through kfp.local's IOStore: the DAG's own inputs ("parent inputs") and each
        finished task's outputs. Artifacts in it are dsl.Artifact objects whose URI is their
        copy in the store."""
        values = io.IOStore()
        inputs = OrchestratorUtils.join_user_inputs_and_defaults(arguments, dag.input_definitions)
        for name, value in inputs.items():
            values.put_parent_input(name, value)
        skipped: set[str] = set()
        order = graph_utils.topological_sort_tasks(dag.dag.tasks)  # a stack: pop() = next
        while order:
            name = order.pop()
            task = dag.dag.tasks[name]
            if skipped & set(task.dependent_tasks):  # downstream of a skipped task
                skipped.add(name)
                continue
            # componentInputParameter/Artifact, taskOutputParameter/Artifact, constants.
            task_arguments = OrchestratorUtils.make_task_arguments(task.inputs, values)
            condition = task.trigger_policy.condition
            if condition and not _holds(condition, task_arguments):
                skipped.add(name)
                continue
            component = self.spec.components[task.component_ref.name]
            if component.WhichOneof("implementation") == "dag":
                outputs = self.run_dag(component, task_arguments)
            else:
                outputs = self.run_step(name, component, task_arguments)
            for key, value in outputs.items():
                values.put_task_output(name, key, value)
        return OrchestratorUtils.get_dag_outputs(dag.dag.outputs, values)

    def run_step(self, name: str, component: pipeline_spec_pb2.ComponentSpec,
                 arguments: dict) -> dict:  # fmt: skip
        """One container step, as a pod runs it: download, run, upload, forget."""
        folder = self.workdir / name
        shutil.rmtree(folder, ignore_errors=True)
        for sub in ("inputs", "outputs", "home", "tmp"):
            (folder / sub).mkdir(parents=True)

        # 1. Download: a copy of each declared input artifact, and nothing else.
        arguments = dict(arguments)
        for key in component.input_definitions.artifacts:
            if arguments.get(key) is not None:
                arguments[key] = _copy_artifact(arguments[key], folder / "inputs" / key)

        # 2. The executor input: parameters, input artifacts (URI = the copy), and where the
        # outputs go (outputs/<name>, outputs/executor_output.json).
        executor_input = executor_input_utils.construct_executor_input(
            component_spec=component, arguments=arguments,
            task_root=str(folder / "outputs"), block_input_artifact=False,
        )  # fmt: skip
        container = utils.struct_to_executor_spec(
            self.spec.deployment_spec["executors"][component.executor_label]
        ).container
        # The component's own command: `sh -ec <bootstrap> <source> --executor_input {{$}} ...`;
        # this resolves {{$}} (the executor input as JSON) and the {{$.pipeline_job_*}} values.
        command = placeholder_utils.replace_placeholders(
            full_command=[*container.command, *container.args],
            executor_input_dict=executor_input_utils.executor_input_to_dict(
                executor_input, component
            ),
            pipeline_resource_name=f"{self.spec.pipeline_info.name}-{self.run.run_id}",
            task_resource_name=name,
            pipeline_root=str(self.store.parent),
            unique_pipeline_id=self.run.run_id,
        )
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.defpath]),
            **self.env,  # the image's environment and the pod's (e.g. secrets)
            **{variable.name: variable.value for variable in container.env},
            "HOME": str(folder / "home"),
            "TMPDIR": str(folder / "tmp"),
        }

        # 3. Run it, its output to logs/<name>.log.
        log = self.run.logs / f"{name}.log"
        started = time.perf_counter()
        with open(log, "w") as out:
            code = subprocess.run(command, cwd=folder, env=env, stdout=out,
                                  stderr=subprocess.STDOUT).returncode  # fmt: skip
        self.run.seconds[name] = round(time.perf_counter() - started, 1)
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise IsolatedStepError(f"step {name!r} exited with {code}; the end of {log}:\n{tail}")

        # 4. Upload: output parameters stay in memory; output artifacts (files and the metadata
        # from executor_output.json) go to the store. Then the step's folder is gone.
        outputs = executor_output_utils.get_outputs_for_task(executor_input, component)
        for key, value in outputs.items():
            if isinstance(value, dsl.Artifact):
                outputs[key] = _copy_artifact(value, self.store / name / key)
        shutil.rmtree(folder)
        self.run.tasks.append(name)
        self.run.outputs[name] = outputs
        return outputs


def _copy_artifact(artifact: dsl.Artifact, target: Path) -> dsl.Artifact:
    """The same artifact (type, name, metadata) with its file or folder copied to `target`.
    An artifact its step never wrote to (e.g. metrics kept only in metadata) has no files."""
    source = Path(artifact.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    elif source.is_file():
        shutil.copy2(source, target)
    return type(artifact)(name=artifact.name, uri=str(target), metadata=dict(artifact.metadata))


def _holds(condition: str, arguments: dict) -> bool:
    """A trigger condition, as the compiler writes them (CEL over the task's own inputs):
    `inputs.parameter_values['pipelinechannel--evaluate-blessed'] == true`, `!(...)`, `&&`, `||`.
    Rewritten to Python and evaluated; an input it names that is missing raises KeyError."""
    python = re.sub(r"!\s*\(", "not (", condition).replace("&&", " and ").replace("||", " or ")
    names = {"__builtins__": {}, "true": True, "false": False, "null": None,
             "int": int, "float": float, "str": str,
             "inputs": SimpleNamespace(parameter_values=arguments)}  # fmt: skip
    return bool(eval(python, names))
