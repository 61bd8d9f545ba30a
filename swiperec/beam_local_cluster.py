"""A Beam "cluster" on this machine: a portable job service and a pool of SDK worker processes.

    with local_portable_cluster(workers=2) as args:
        pipeline = new_pipeline(args)   # --runner=PortableRunner --job_endpoint=... etc.
        ...

It rehearses the path a Flink or Dataflow job takes (the Fn API), without Java, Docker or any
download: the driver pickles the pipeline's functions into the job graph and submits it over
gRPC to a job service in another process, which runs Beam's FnApiRunner; that runner asks a
worker pool (`--environment_type=EXTERNAL`) for SDK workers, each an OS process of its own,
which unpickle and run the user code. Whatever fails to pickle, relies on driver memory or on
module state set in the driver fails here as on a cluster. Two services, both subprocesses of
the caller, each in a process group of its own, killed on exit (also when the body raises):

- **The job service**: Beam's `LocalJobServicer` (what `python -m apache_beam.runners.
  portability.local_job_service_main` serves), run as `python -m swiperec.beam_local_cluster
  job-service`. It differs from Beam's main in its job, a `BeamJob` subclass, in two ways:
  1. Beam's runs every job in ONE SDK worker: `BeamJob` calls `FnApiRunner.run_via_runner_api`,
     which never reads `--direct_num_workers` (only `run_pipeline`, the in-process path, does),
     and nothing in the Python job service reads `--sdk_worker_parallelism`. Ours gives the
     runner the job's `--sdk_worker_parallelism` (the portable option for "SDK worker processes
     per worker node", as Flink's job server reads it) as its number of workers; the runner then
     starts that many workers and splits each stage's input across them (a stateful stage's
     stays in one).
  2. The FnApiRunner does not always notice a lost worker: one that dies in a bundle fails the
     job ("Channel closed prematurely"), but one that fails to start, or dies between bundles,
     leaves the job waiting for ever. Ours watches the workers started during the job and
     fails the job when one is gone, with the end of that worker's log.
  Staged artifacts go to `staging/`; the job service's own log is `job_service.log` (the
  workers' log records end up there too, sent over the Fn API logging service).
- **The worker pool**: `python -m apache_beam.runners.worker.worker_pool_main`, unchanged. Its
  main always starts workers as child *processes* (threads only in its in-process use,
  `start(use_process=False)`). With `--container_executable` it runs that executable with the
  container contract's flags (`--id`, `--provision_endpoint`, ...), as Beam's SDK container
  does in worker-pool mode with its Go `boot`. Ours is `_boot` below, which does what that boot
  does minus installing packages: it asks the provision service for the job's pipeline options
  and endpoints, fetches the staged artifacts into its semi-persistent folder (where
  sdk_worker_main finds a pickled main session), and execs `python -m apache_beam.runners.
  worker.sdk_worker_main`. So each worker is a child process of the pool that runs with the
  job's options (pickler, state cache, experiments) and logs to the runner. (Without an
  executable the pool runs `python -c "SdkHarness(...).run()"`: `python` from PATH, no pipeline
  options, no state cache, and a stdout pipe nobody reads.) Each worker's stdout and stderr
  go to `workers/<id>-*/worker.log`.

Every process runs `sys.executable` (the venv's python) in an empty folder, so workers import
only what the venv has installed (swiperec is, in develop mode), as in a pipeline image: code
reachable only from a test module or the source tree is not importable there.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Staged artifacts a worker needs no action for: the pickled main session is loaded by
# sdk_worker_main from the semi-persistent folder, and the submission environment's `pip freeze`
# is for information. Anything else (requirements, extra packages, a setup.py tarball) is
# installed by a real SDK container's boot; here the workers use this venv as it is.
_NOTHING_TO_INSTALL = ("pickled_main_session", "submission_environment_dependencies.txt")


class ClusterStartError(RuntimeError):
    """The job service or the worker pool did not come up."""


# The longest a job may run before its driver stops following it (`--job_server_timeout`).
JOB_SERVER_TIMEOUT_S = 7 * 86_400


@contextlib.contextmanager
def local_portable_cluster(
    workers: int = 2,
    work_dir: str | os.PathLike | None = None,
    timeout: float = 60.0,
    worker_env: dict[str, str] | None = None,
) -> Iterator[list[str]]:
    """Start a job service and a worker pool; yield the pipeline options that run a pipeline
    on them in `workers` SDK worker processes. Both services are stopped on exit.

    The workers inherit this process's environment, and `worker_env` on top (as a Flink task
    manager's pod spec gives its worker pool, e.g. the database's credentials).

    `work_dir` holds the logs, the staged artifacts and one folder per worker (see the module
    docstring); by default a temporary folder, deleted on exit (a given one is kept). Raises
    ClusterStartError, with the end of its log, when a service exits or does not listen within
    `timeout` seconds."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    owned = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="swiperec-beam-cluster-") if owned else work_dir)
    for folder in ("staging", "workers", "cwd"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    boot = root / "boot"
    boot.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} -m swiperec.beam_local_cluster boot"
        f' --workers_dir {shlex.quote(str(root / "workers"))} "$@"\n'
    )
    boot.chmod(0o755)
    # Free now; a service that loses its port to another process in between fails to start.
    job_port, pool_port = _free_port(), _free_port()
    services: list[_Service] = []
    try:
        services.append(_Service.start("job service", root, job_port, [
            "-m", "swiperec.beam_local_cluster", "job-service", "--port", str(job_port),
            "--staging_dir", str(root / "staging"), "--workers_dir", str(root / "workers"),
        ]))  # fmt: skip
        services.append(_Service.start("worker pool", root, pool_port, [
            "-m", "apache_beam.runners.worker.worker_pool_main",
            "--service_port", str(pool_port), "--container_executable", str(boot),
        ], worker_env))  # fmt: skip
        deadline = time.monotonic() + timeout
        for service in services:
            service.wait_until_listening(deadline)
        yield [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{job_port}",
            # Beam's PortableRunner opens the job's state and message streams with this as
            # their gRPC deadline when the job service's job id is its preparation id, as
            # Beam's Python job services' is (not the Java Flink/Spark job servers'): with its
            # default (300 s) the driver loses every job that runs longer than five minutes
            # (DEADLINE_EXCEEDED), though the job goes on. It also bounds how long a
            # submission to a job service that does not answer waits.
            f"--job_server_timeout={JOB_SERVER_TIMEOUT_S}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
            f"--sdk_worker_parallelism={workers}",
        ]
    finally:
        for service in reversed(services):
            service.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@dataclass
class _Service:
    name: str
    process: subprocess.Popen
    port: int
    log: Path

    @classmethod
    def start(
        cls, name: str, root: Path, port: int, args: list[str], env: dict | None = None
    ) -> _Service:
        log = root / f"{name.replace(' ', '_')}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=root / "cwd",
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group: the service and the workers it starts
                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            )
        return cls(name, process, port, log)

    def wait_until_listening(self, deadline: float) -> None:
        """Until this process listens on its port and the port accepts a connection (the
        process's own socket: another process may have taken the port since it was free)."""
        import psutil

        while True:
            if self.process.poll() is not None:
                raise ClusterStartError(
                    f"the {self.name} exited with code {self.process.returncode} on start; "
                    f"the end of its log ({self.log}):\n{_tail(self.log)}"
                )
            with contextlib.suppress(psutil.Error, OSError):
                sockets = psutil.Process(self.process.pid).net_connections("tcp")
                if any(s.status == psutil.CONN_LISTEN and s.laddr.port == self.port
                       for s in sockets):  # fmt: skip
                    socket.create_connection(("localhost", self.port), timeout=1).close()
                    return
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"the {self.name} does not accept connections on port {self.port}; the end "
                    f"of its log ({self.log}):\n{_tail(self.log)}"
                )
            time.sleep(0.2)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the service's process group (the service and the workers it started), then
        SIGKILL whatever of the group is left after `grace` seconds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _tail(path: str | os.PathLike, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error})"


# -- the two entry points: `python -m swiperec.beam_local_cluster job-service | boot` ---------


def _serve_jobs(port: int, staging_dir: str, workers_dir: str) -> None:
    """Beam's local job service; its jobs run in `--sdk_worker_parallelism` SDK workers and
    fail when one of their workers is lost."""
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    class ParallelJob(local_job_service.BeamJob):
        def _invoke_runner(self):  # BeamJob's, with the two changes of the module docstring
            options = self.pipeline_options()
            parallelism = int(options.view_as(PortableOptions).sdk_worker_parallelism or 0)
            runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
            if not hasattr(runner, "_num_workers"):  # what run_pipeline sets; fail loudly
                raise RuntimeError("this Beam's FnApiRunner has no _num_workers")
            runner._num_workers = parallelism or os.cpu_count() or 1  # 0: the runner chooses
            self.set_state(beam_job_api_pb2.JobState.RUNNING)
            return _run_watching_workers(
                lambda: runner.run_via_runner_api(self._pipeline_proto, options), workers_dir
            )

    logging.basicConfig(level=logging.INFO)  # as Beam's local_job_service_main
    servicer = local_job_service.LocalJobServicer(staging_dir, beam_job_type=ParallelJob)
    servicer.start_grpc_server(port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"job service listening on localhost:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        servicer.stop()


def _run_watching_workers(run, workers_dir: str):
    """`run()`, in a thread; raises when a worker started since the call has died (each boot
    writes `pid` in its folder) and `run` does not end within seconds of it (its workers exit
    as it ends). With two jobs at once, one job's lost worker fails both."""
    import psutil

    started = time.time()
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = run()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, name="run_job", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(1.0)
        for pid_file in glob.glob(os.path.join(workers_dir, "*", "pid")):
            if os.path.getmtime(pid_file) < started:
                continue
            pid = int(Path(pid_file).read_text())
            try:
                alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                alive = False
            thread.join(0 if alive else 10)
            if not alive and thread.is_alive():
                log = os.path.join(os.path.dirname(pid_file), "worker.log")
                raise RuntimeError(
                    f"SDK worker process {pid} died while the job ran (the FnApiRunner would "
                    f"wait for it for ever); the end of its log ({log}):\n{_tail(log)}"
                )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _boot(argv: list[str]) -> None:
    """The SDK container's boot, for a worker of this machine's venv: provision, fetch the
    staged artifacts, exec `sdk_worker_main` with the job's options and endpoints."""
    parser = argparse.ArgumentParser(prog="boot")
    for flag in ("--workers_dir", "--id", "--provision_endpoint", "--artifact_endpoint",
                 "--control_endpoint", "--logging_endpoint"):  # fmt: skip
        parser.add_argument(flag, required=True)
    args, _ = parser.parse_known_args(argv)
    folder = tempfile.mkdtemp(prefix=f"{args.id}-", dir=args.workers_dir)
    # The worker's output, this boot's first: the pool gives it a stdout pipe it never reads.
    log = os.open(os.path.join(folder, "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # The same process after the exec; written whole, for the job service's watch.
    Path(folder, "pid.tmp").write_text(str(os.getpid()))
    os.replace(os.path.join(folder, "pid.tmp"), os.path.join(folder, "pid"))
    os.execve(sys.executable, _provision(args, folder), os.environ)


def _provision(args, folder: str) -> list[str]:
    """Sets the environment sdk_worker_main reads; returns its command line."""
    import grpc
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import (
        beam_artifact_api_pb2,
        beam_artifact_api_pb2_grpc,
        beam_provision_api_pb2,
        beam_provision_api_pb2_grpc,
        beam_runner_api_pb2,
        endpoints_pb2,
    )
    from google.protobuf import json_format, text_format

    metadata = [("worker_id", args.id)]  # the runner's provision service asks for it
    with grpc.insecure_channel(args.provision_endpoint) as channel:
        request = beam_provision_api_pb2.GetProvisionInfoRequest()
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        info = stub.GetProvisionInfo(request, metadata=metadata).info
    staged = os.path.join(folder, "staged")
    os.makedirs(staged)
    with grpc.insecure_channel(info.artifact_endpoint.url or args.artifact_endpoint) as channel:
        retrieval = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
        for number, artifact in enumerate(info.dependencies):
            name = f"artifact-{number}"
            if artifact.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
                role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                    artifact.role_payload
                )
                name = os.path.basename(role.staged_name)
            if name not in _NOTHING_TO_INSTALL:
                print(f"boot: staged {name} is not installed: the workers use this venv")
            request = beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact)
            with open(os.path.join(staged, name), "wb") as out:
                for chunk in retrieval.GetArtifact(request, metadata=metadata):
                    out.write(chunk.data)

    def descriptor(url: str) -> str:
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))

    os.environ.update(
        WORKER_ID=args.id,
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
        SEMI_PERSISTENT_DIRECTORY=folder,
        CONTROL_API_SERVICE_DESCRIPTOR=descriptor(
            info.control_endpoint.url or args.control_endpoint
        ),
        LOGGING_API_SERVICE_DESCRIPTOR=descriptor(
            info.logging_endpoint.url or args.logging_endpoint
        ),
        RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
    )
    return [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else ""
    if command == "job-service":
        parser = argparse.ArgumentParser(prog="job-service")
        for flag in ("--staging_dir", "--workers_dir"):
            parser.add_argument(flag, required=True)
        parser.add_argument("--port", type=int, required=True)
        args = parser.parse_args(argv)
        _serve_jobs(args.port, args.staging_dir, args.workers_dir)
    elif command == "boot":
        _boot(argv)
    else:
        sys.exit("usage: python -m swiperec.beam_local_cluster job-service|boot ...")


def tag_with_process(element):
    """`element` -> (element, pid, parent pid) of the process running it: a probe for tests
    of where a pipeline's code runs (module-level, so workers import it by name)."""
    return element, os.getpid(), os.getppid()


if __name__ == "__main__":
    main()
