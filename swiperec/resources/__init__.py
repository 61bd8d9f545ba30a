"""Files the installed package needs from the rest of the project, shipped inside it.

    migrations/               the schema: a copy of supabase/migrations/*.sql
    functions/                the Edge Function and its shared modules: supabase/functions/
                              (*.ts, and *.json / *.toml should they appear), which
                              `swiperec simulate` runs under Deno
    two_tower_training.yaml   the compiled training pipeline: pipelines/compiled/...

In a source checkout all three are links to their one source (the Supabase CLI reads
supabase/migrations and supabase/functions; `make compile` writes the pipeline YAML), and
building the wheel copies the files in, so an installed swiperec reads nothing outside itself.
A test checks that the wheel's copies equal the sources.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PIPELINE_YAML = "two_tower_training.yaml"
EDGE_FUNCTION = "functions/enhanced_two_tower_recommendations/index.ts"


def resource_path(name: str) -> Path:
    """The path of a shipped file or folder (`migrations`, `functions`, `EDGE_FUNCTION`,
    `two_tower_training.yaml`)."""
    return Path(str(files(__name__) / name))
