"""The package as a user installs it: a wheel built from this checkout, installed (not editable)
into a fresh virtualenv, run from a folder outside the checkout.

The virtualenv shares this test session's installed dependencies (a .pth file names their
folder) but not its editable swiperec, so every swiperec module it runs is the wheel's and none
can read the source tree. `tests/conftest.py` builds one per session (`installed`).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path  # the virtualenv's interpreter
    swiperec: Path  # its `swiperec` command
    elsewhere: Path  # a folder outside the checkout, to run it from

    def env(self, home: Path) -> dict:
        """The environment to run it in, with its embedded server's data under `home`."""
        env = {
            key: value for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "PYTHONPATH", "SWIPEREC_MIGRATIONS", "VIRTUAL_ENV")
        }  # fmt: skip
        env.update(PATH=f"{self.python.parent}:{env['PATH']}", SWIPEREC_HOME=str(home),
                   TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip
        # Deno as `make deno` installs it (the simulator runs the Edge Function the wheel ships).
        deno = ROOT / "tools" / "deno"
        env.setdefault("SWIPEREC_DENO", str(deno / "node_modules" / ".bin" / "deno"))
        env.setdefault("DENO_DIR", str(deno / "cache"))
        return env

    def run(self, env: dict, *args, timeout=900) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.swiperec), *args], cwd=self.elsewhere, env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip


def source_copy(target: Path) -> Path:
    """The files of the checkout (tracked, or new and not ignored), links kept as links."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source, copy = ROOT / name, target / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet in git
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, copy)
    return target


def build_and_install(tmp: Path) -> Installed:
    """Build the wheel from a copy of the checkout, install it into a new virtualenv."""
    source = source_copy(tmp / "source")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp / "dist")],
        check=True, capture_output=True, cwd=tmp,
    )  # fmt: skip
    [wheel] = (tmp / "dist").glob("swiperec-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(packages, "shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return Installed(wheel, python, venv / "bin" / "swiperec", elsewhere)
