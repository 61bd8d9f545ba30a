"""The hostile-input corpus: each file of tests/testdata/hostile_csv/ imported into a fresh
database, with the outcome `cases.json` names for it: refused whole (and which error), or which
rows load, which lines are rejected with which category, and what accepted values are stored.

`@@REPEAT:c:N@@` in a file stands for N copies of c (a 1 MB field is not kept in the repository).
The Edge Function's hostile requests are cases of its handler test (index_test.ts).
"""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from swiperec.data.importer import ImportFileError, import_files

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "testdata" / "hostile_csv"
MANIFEST = json.loads((CORPUS / "cases.json").read_text())
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
REPEAT = re.compile(rb"@@REPEAT:(.):(\d+)@@")


def materialise(case: dict, folder: Path) -> Path:
    data = (CORPUS / case["file"]).read_bytes()
    data = REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), data)
    path = folder / case["file"]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", MANIFEST["cases"], ids=[c["file"] for c in MANIFEST["cases"]])
def test_each_hostile_file_has_its_named_outcome(case, conn, tmp_path):
    base = tmp_path / "base_videos.csv"
    base.write_text(MANIFEST["base_videos"])
    import_files(conn, videos=base, now=NOW)
    expect = case["expect"]
    path = materialise(case, tmp_path)
    if "error" in expect:
        with pytest.raises(ImportFileError, match=expect["error"]):
            import_files(conn, **{case["kind"]: path}, now=NOW)
        return
    report = import_files(conn, **{case["kind"]: path}, now=NOW)[case["kind"]]
    with conn.cursor() as cur:
        cur.execute("select line_number::text, category from import_rejections "
                    "where import_id = %s", (report.import_id,))  # fmt: skip
        rejected = dict(cur.fetchall())
        values = {}
        for external_id, columns in expect.get("values", {}).items():
            cur.execute(f"select {', '.join(columns)} from videos where external_id = %s",
                        (external_id,))  # fmt: skip
            values[external_id] = dict(zip(columns, cur.fetchone(), strict=True))
        cur.execute("select external_id from videos")
        ids = {r[0] for r in cur.fetchall()}
    conn.rollback()
    assert rejected == expect["rejected"], case["what"]
    assert report.inserted == expect["loaded"], case["what"]
    assert values == expect.get("values", {}), case["what"]
    assert not ids & set(expect.get("absent", [])), case["what"]
