"""The Edge Function `enhanced_two_tower_recommendations` run under Deno on this machine, for
the simulator: started as a subprocess on a free port, ready once it answers, stopped after.

The function's source ships with the package (`swiperec.resources`, a link to
supabase/functions/ in a checkout). Deno comes from `SWIPEREC_DENO`, else the project's
`tools/deno/node_modules/.bin/deno` (installed by `make deno`; its npm cache `tools/deno/cache`
is used as DENO_DIR unless one is set), else `deno` on PATH.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from swiperec.errors import SwiperecError
from swiperec.resources import EDGE_FUNCTION, resource_path

PERMISSIONS = ("--allow-env", "--allow-net", "--allow-read")
PROJECT_DENO = Path("tools") / "deno" / "node_modules" / ".bin" / "deno"
PROJECT_CACHE = Path("tools") / "deno" / "cache"
# Token settings the simulator decides itself: its tokens are HS256 with JWT_SECRET, aud
# "authenticated", no issuer; a caller's own settings would make the function refuse them.
_TOKEN_SETTINGS = ("JWT_JWKS", "JWT_JWKS_URL", "JWT_AUDIENCE", "JWT_ISSUER")


class DenoNotFound(SwiperecError):
    """No Deno binary to run the Edge Function with."""


class EdgeFunctionFailed(SwiperecError):
    """The Edge Function did not start or did not answer."""


def find_deno(environ=None, cwd: Path | None = None) -> Path:
    """The Deno binary: `$SWIPEREC_DENO`, else tools/deno/... under `cwd` (default: the current
    directory), else `deno` on PATH; DenoNotFound says how to get one."""
    environ = os.environ if environ is None else environ
    named = environ.get("SWIPEREC_DENO")
    if named:
        path = Path(named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise DenoNotFound(f"SWIPEREC_DENO={named} is not an executable file")
        return path
    local = Path(cwd or Path.cwd()) / PROJECT_DENO
    if local.is_file() and os.access(local, os.X_OK):
        return local
    on_path = shutil.which("deno", path=environ.get("PATH"))
    if on_path:
        return Path(on_path)
    raise DenoNotFound(
        "Deno is needed to run the Edge Function: set SWIPEREC_DENO to its binary, run "
        "`make deno` in the swiperec checkout (installs tools/deno/), or put `deno` on PATH; "
        "or pass --function-url to use a function that is already running"
    )


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EdgeFunction:
    """The Edge Function as a Deno subprocess; a context manager (started on enter, stopped on
    exit). `url` is where it answers once started.

    Its environment is this process's, with SUPABASE_DB_URL, JWT_SECRET, PORT and HOST set and the
    other token settings removed (REALTIME_EMBED_* pass through, so a run can use the real-time
    endpoint). It runs in its own session, so a Ctrl-C meant for the simulator leaves it serving
    the requests in flight; `stop` ends it. Its output goes to a temporary log file.
    """

    def __init__(
        self,
        database_url: str,
        jwt_secret: str,
        *,
        deno: Path | None = None,
        source: Path | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        if not jwt_secret:
            raise ValueError("the JWT secret is empty")
        self.database_url = database_url
        self.jwt_secret = jwt_secret
        self.deno = Path(deno) if deno else find_deno()
        self.source = Path(source) if source else resource_path(EDGE_FUNCTION)
        if not self.source.is_file():
            raise EdgeFunctionFailed(f"the Edge Function's source is missing: {self.source}")
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the Edge Function is not started")
        return f"http://127.0.0.1:{self.port}/"

    def environment(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TOKEN_SETTINGS}
        env.update(
            SUPABASE_DB_URL=self.database_url,
            JWT_SECRET=self.jwt_secret,
            PORT=str(port),
            HOST="127.0.0.1",
            NO_COLOR="1",
        )
        # The project's Deno (`make deno`) keeps its npm packages in tools/deno/cache.
        if "DENO_DIR" not in env and str(self.deno).endswith(str(PROJECT_DENO)):
            cache = Path(str(self.deno).removesuffix(str(PROJECT_DENO)) or ".") / PROJECT_CACHE
            if cache.is_dir():
                env["DENO_DIR"] = str(cache)
        return env

    def start(self) -> EdgeFunction:
        """Start Deno and wait until the function answers (401 to a request without a token).

        A port taken between choosing and binding it is retried on another port."""
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept open until stop)
            mode="w+b", prefix="swiperec-edge-", suffix=".log"
        )
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> EdgeFunction:
        for attempt in range(3):
            port = free_port()
            self._process = subprocess.Popen(
                [str(self.deno), "run", *PERMISSIONS, str(self.source)],
                env=self.environment(port), stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            self.port = port
            try:
                self._wait_until_ready()
                return self
            except EdgeFunctionFailed:
                retry = attempt < 2 and "AddrInUse" in self.log_tail()
                self.stop(close_log=not retry)
                if not retry:
                    raise
                self._log.seek(0)
                self._log.truncate()
        raise AssertionError("unreachable")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise EdgeFunctionFailed(
                        f"the Edge Function exited with code {self._process.returncode} "
                        f"before answering; its log ends:\n{self.log_tail()}"
                    )
                try:
                    status = client.get(self.url).status_code
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                if status == 401:
                    return
                raise EdgeFunctionFailed(
                    f"the Edge Function answered {status} to a request without a token "
                    f"(expected 401); its log ends:\n{self.log_tail()}"
                )
        raise EdgeFunctionFailed(
            f"the Edge Function did not answer within {self.startup_timeout:.0f} s; its log "
            f"ends:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the function's output."""
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_bytes()[-16_384:].decode(errors="replace")
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, *, close_log: bool = True) -> None:
        """End the function (SIGTERM, then SIGKILL after 10 s); idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if close_log and self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EdgeFunction:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
