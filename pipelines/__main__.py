"""Compile the pipelines: `python -m pipelines compile [--out PATH]` (`make compile`).

Writes `pipelines/compiled/two_tower_training.yaml`, the committed file that every training run
uses (the swiperec package ships it: `swiperec/resources/` links to it, and the wheel gets a
copy), and `pipelines/compiled/monitoring.yaml`, the monitoring pipeline for a recurring run. A
test recompiles both and fails when a committed file is stale. Run from the repository root.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "compiled" / "two_tower_training.yaml"
MONITORING = COMPILED.with_name("monitoring.yaml")


def compile_pipeline(out: str | Path = COMPILED) -> Path:
    """Write the pipeline's YAML to `out` (by default the committed file); returns the path."""
    from kfp import compiler

    from pipelines.training_pipeline import two_tower_training

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(two_tower_training, str(out))
    return out


def compile_monitoring(out: str | Path = MONITORING) -> Path:
    """Write the monitoring pipeline's YAML to `out` (by default the committed file)."""
    from kfp import compiler

    from pipelines.monitoring_pipeline import monitoring

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(monitoring, str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compiling = commands.add_parser("compile", help="write the compiled pipelines' YAML")
    compiling.add_argument(
        "--out", default=str(COMPILED), help="the training pipeline's (default: the committed file)"
    )
    compiling.add_argument(
        "--monitoring-out", default=str(MONITORING),
        help="the monitoring pipeline's (default: the committed file)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print(f"compiled      {compile_pipeline(args.out)}")
    print(f"compiled      {compile_monitoring(args.monitoring_out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
