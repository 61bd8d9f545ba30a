"""CSV import of videos, reviews and decisions, with a quarantine for the rows it refuses.

    report = import_files(conn, videos=Path("videos.csv"), decisions=Path("decisions.csv"))
    print(report.format_report()); sys.exit(report.exit_code)

Each file is one transaction holding its target rows, its `data_imports` row and its
`import_rejections`, so a crash never leaves half a file. Good rows are validated in Python
(`swiperec.data.validation`), sent by binary COPY into a temporary staging table, checked there
against the database (unknown videos, conflicting decisions), and merged into the target with
one `insert ... on conflict` statement. Videos and reviews are state: a re-imported row updates
the stored one only when something differs. Decisions are events: one already recorded is
unchanged. Re-running an import therefore adds nothing, and for every file
rows read = inserted + updated + unchanged + rejected.

Re-importing a video sets the columns the CSV carries (an empty description clears it) and
leaves the others (label, series, duration, thumbnail) as they are. A review re-imported with
another rating or time replaces the stored one: the latest import wins.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg2.extensions

from swiperec.data.csv_reader import (
    COLUMNS,
    IMPORT_ORDER,
    ImportFileError,
    Rejection,
    check_header,
    read_rows,
)
from swiperec.data.validation import KEYS, PG_TYPES, RowValidator
from swiperec.db.binary_copy import Column, copy_binary

__all__ = ["FileReport", "ImportFileError", "ImportReport", "import_files"]

CHUNK_ROWS = 50_000  # rows validated in Python before they are COPYed, so memory stays bounded

Progress = Callable[[str, int], None]


@dataclass
class FileReport:
    """What the import did with one file. `rejections` counts rejected rows by category
    (e.g. `invalid_decision`, `duplicate`); their lines and reasons are in `import_rejections`
    under `import_id`."""

    kind: str
    path: Path
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejections: Counter = field(default_factory=Counter)
    import_id: int | None = None
    blank_lines: int = 0

    @property
    def valid(self) -> int:
        """Rows that passed validation: now in the target table, whether new or not."""
        return self.inserted + self.updated + self.unchanged

    @property
    def loaded_any(self) -> bool:
        return self.valid > 0


@dataclass
class ImportReport:
    """One `FileReport` per imported file, in import order."""

    files: list[FileReport]

    def __getitem__(self, kind: str) -> FileReport:
        for report in self.files:
            if report.kind == kind:
                return report
        raise KeyError(f"no {kind} file in this import")

    @property
    def loaded_any(self) -> bool:
        """True when some file had a valid row (a re-import of known rows counts)."""
        return any(report.loaded_any for report in self.files)

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 1 when no file had a single valid row, else 0. (Unreadable
        files raise `ImportFileError` before anything is loaded.)"""
        return 0 if self.loaded_any else 1

    def format_report(self) -> str:
        """A summary table for the terminal: counts per file, then rejections by category."""
        head = ("file", "rows read", "inserted", "updated", "unchanged", "rejected", "import id")
        counts = ("rows_read", "inserted", "updated", "unchanged", "rejected", "import_id")
        table = [head] + [
            (f"{r.kind}: {r.path.name}", *(str(getattr(r, name)) for name in counts))
            for r in self.files
        ]
        widths = [max(map(len, column)) for column in zip(*table, strict=True)]
        lines = [
            row[0].ljust(widths[0])
            + "".join(f"  {cell:>{width}}" for cell, width in zip(row[1:], widths[1:], strict=True))
            for row in table
        ]
        lines.insert(1, "-" * len(lines[0]))
        for r in self.files:
            if r.rejections:
                counts = ", ".join(f"{n} {category}" for category, n in r.rejections.most_common())
                lines.append(f"{r.kind} rejected: {counts}")
        if any(r.rejected for r in self.files):
            lines.append(
                "Rejected rows, with line numbers and reasons: "
                "select * from import_rejections where import_id = <import id>"
            )
        if not self.loaded_any:
            lines.append("Nothing was loaded: no file had a valid row.")
        return "\n".join(lines)


def import_files(
    conn,
    *,
    videos: Path | None = None,
    decisions: Path | None = None,
    reviews: Path | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import the given CSV files: videos first (so reviews and decisions may refer to videos
    of the same run), then reviews, then decisions; each file in its own transaction.

    `now` (default: the current UTC time) sets what counts as a future time. `progress`, if
    given, is called as `progress(kind, rows_read)` after each chunk of rows and once more when
    a file is committed. Every file's header is checked before anything is loaded, so an
    unreadable file (`ImportFileError`) leaves the database as it was. A database error rolls
    back the file being imported and propagates; files imported before it stay committed, and
    re-running the whole import is safe. `conn` must have no open transaction.
    """
    given = {"videos": videos, "reviews": reviews, "decisions": decisions}
    files = [(kind, Path(given[kind])) for kind in IMPORT_ORDER if given[kind] is not None]
    if not files:
        raise ValueError("import_files needs at least one of videos=, reviews=, decisions=")
    if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise ValueError(
            "import_files commits once per file: commit or roll back the connection's open "
            "transaction first"
        )
    for kind, path in files:
        check_header(kind, path)
    now = datetime.now(UTC) if now is None else now
    autocommit, conn.autocommit = conn.autocommit, False  # one transaction per file
    try:
        return ImportReport([_import_file(conn, kind, path, now, progress) for kind, path in files])
    finally:
        conn.autocommit = autocommit


def _import_file(conn, kind: str, path: Path, now: datetime, progress) -> FileReport:
    """Load one file in one transaction; roll it back whole on any error."""
    report = FileReport(kind=kind, path=path)
    try:
        with conn.cursor() as cur:
            _create_work_tables(cur, kind)
            _stage_rows(cur, report, RowValidator(kind, now), progress)
            _reject_in_database(cur, kind)
            report.inserted, report.updated = _merge(cur, kind)
            _record(cur, report)
        conn.commit()
    except BaseException:
        with contextlib.suppress(psycopg2.Error):  # a dead connection must not hide the cause
            conn.rollback()
        raise
    if progress:
        progress(kind, report.rows_read)
    return report


# --------------------------------------------------------------------------------------------
# Staging: validated rows and Python-side rejections, COPYed in chunks


def _create_work_tables(cur, kind: str) -> None:
    cur.execute(
        "create temp table import_staging (line_number integer, raw_line text, "
        + ", ".join(f"{name} {PG_TYPES[name]}" for name in COLUMNS[kind])
        + ") on commit drop"
    )
    cur.execute(
        "create temp table import_rejects (line_number integer, category text, reason text, "
        "raw_line text) on commit drop"
    )


def _stage_rows(cur, report: FileReport, validator: RowValidator, progress) -> None:
    """Validate every row of the file; COPY good rows to staging and bad ones to rejects."""
    kind = report.kind
    good: list[tuple] = []  # (CsvRow, its typed values)
    bad: list[Rejection] = []
    for row in read_rows(kind, report.path):
        if isinstance(row, int):
            report.blank_lines += 1
            continue
        report.rows_read += 1
        parsed = validator.validate(row)
        if isinstance(parsed, Rejection):
            bad.append(parsed)
        else:
            good.append((row, parsed))
        if len(good) + len(bad) >= CHUNK_ROWS:
            _flush(cur, kind, good, bad)
            if progress:
                progress(kind, report.rows_read)
    _flush(cur, kind, good, bad)
    cur.execute("analyze import_staging")  # temp tables get no statistics otherwise


def _flush(cur, kind: str, good: list, bad: list[Rejection]) -> None:
    if good:
        copy_binary(cur, "import_staging", _staging_columns(kind, good))
        good.clear()
    if bad:
        copy_binary(
            cur,
            "import_rejects",
            [
                Column("line_number", "int4", np.array([r.line_number for r in bad])),
                Column("category", "text", [r.category for r in bad]),
                Column("reason", "text", [r.reason for r in bad]),
                Column("raw_line", "text", [r.raw_line for r in bad]),
            ],
        )
        bad.clear()


def _staging_columns(kind: str, good: list) -> list[Column]:
    rows, parsed = zip(*good, strict=True)
    columns = [
        Column("line_number", "int4", np.array([row.line_number for row in rows])),
        Column("raw_line", "text", [row.raw_line for row in rows]),
    ]
    for name, values in zip(COLUMNS[kind], zip(*parsed, strict=True), strict=True):
        columns.append(_column(name, PG_TYPES[name], values))
    return columns


def _column(name: str, pg_type: str, values: tuple) -> Column:
    """Typed values (see `RowValidator`) as a COPY column; only release_date may be None."""
    if pg_type in ("text", "text[]"):
        return Column(name, pg_type, values)
    if pg_type == "uuid":
        raw = b"".join(value.bytes for value in values)
        return Column(name, pg_type, np.frombuffer(raw, np.uint8).reshape(-1, 16))
    if pg_type == "timestamptz":  # UTC values; COPY reads naive datetime64 as UTC
        naive = [value.replace(tzinfo=None) for value in values]
        return Column(name, pg_type, np.array(naive, dtype="datetime64[us]"))
    if pg_type == "date":
        nulls = np.array([value is None for value in values])
        days = [np.datetime64(0, "D") if value is None else value for value in values]
        return Column(name, pg_type, np.array(days, dtype="datetime64[D]"), nulls=nulls)
    return Column(name, pg_type, np.array(values))


# --------------------------------------------------------------------------------------------
# Checks against the database, the merge, and the bookkeeping

_DUPLICATE = """
with repeats as (
    delete from import_staging s
    using (select line_number, min(line_number) over (partition by {key}) as first_line
           from import_staging) k
    where s.line_number = k.line_number and k.first_line < k.line_number
    returning s.line_number, k.first_line, s.raw_line)
insert into import_rejects (line_number, category, reason, raw_line)
select line_number, 'duplicate', 'duplicate of line ' || first_line || ' (same {key})', raw_line
from repeats
"""

# Within one file, a later row saying the other decision for the same event contradicts the
# first: refused as a conflict (a row saying the same is a duplicate, below).
_CONFLICTING_IN_FILE = """
with contradicting as (
    delete from import_staging s
    using (select line_number, decision,
                  first_value(line_number) over event as first_line,
                  first_value(decision) over event as first_decision
           from import_staging
           window event as (partition by user_id, video_external_id, created_at
                            order by line_number)) k
    where s.line_number = k.line_number and k.first_line < k.line_number
      and k.decision <> k.first_decision
    returning s.line_number, s.decision, k.first_line, k.first_decision, s.raw_line)
insert into import_rejects (line_number, category, reason, raw_line)
select line_number, 'conflicting_decision',
       'decision ''' || decision || ''' contradicts ''' || first_decision || ''' of line '
           || first_line || ' (same user, video and created_at)',
       raw_line
from contradicting
"""

_UNKNOWN_VIDEO = """
with unknown as (
    delete from import_staging s
    where not exists (select 1 from public.videos v where v.external_id = s.video_external_id)
    returning s.line_number, s.video_external_id, s.raw_line)
insert into import_rejects (line_number, category, reason, raw_line)
select line_number, 'unknown_video',
       'unknown video ''' || video_external_id
           || ''': no video has this external_id (or its videos.csv row was rejected)',
       raw_line
from unknown
"""

# A swipe dated before its video came out (on the earliest calendar on Earth, UTC+14) is a wrong
# date: the app shows released videos, and kept as history it would leak the future into
# features. (Reviews may come before a release: screenings, press copies.)
_BEFORE_RELEASE = """
with early as (
    delete from import_staging s
    using public.videos v
    where v.external_id = s.video_external_id and v.release_date is not null
      and s.created_at < (v.release_date::timestamp at time zone 'UTC') - interval '14 hours'
    returning s.line_number, s.created_at, v.release_date, s.raw_line)
insert into import_rejects (line_number, category, reason, raw_line)
select line_number, 'before_release',
       'created_at ' || to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           || ' is before the video''s release on ' || release_date,
       raw_line
from early
"""

# An event already recorded with the other decision is a contradiction, not a repeat.
_CONFLICTING_DECISION = """
with conflicting as (
    delete from import_staging s
    using public.videos v, public.user_video_decisions d
    where v.external_id = s.video_external_id
      and d.user_id = s.user_id and d.video_id = v.id and d.created_at = s.created_at
      and d.decision <> s.decision
    returning s.line_number, s.decision, d.decision as recorded, s.raw_line)
insert into import_rejects (line_number, category, reason, raw_line)
select line_number, 'conflicting_decision',
       'decision ''' || decision || ''' contradicts ''' || recorded
           || ''' already recorded for this user, video and created_at',
       raw_line
from conflicting
"""

# The left joins make a video deleted since the unknown-video check fail the file (video_id
# is not null) instead of dropping its rows silently.
_MERGE = {
    "videos": """
        insert into public.videos as v
            (external_id, title, description, genres, maker, performers, release_date)
        select external_id, title, description, genres, maker, performers, release_date
        from import_staging order by line_number
        on conflict (external_id) do update set
            title = excluded.title, description = excluded.description,
            genres = excluded.genres, maker = excluded.maker,
            performers = excluded.performers, release_date = excluded.release_date
        where (v.title, v.description, v.genres, v.maker, v.performers, v.release_date)
            is distinct from (excluded.title, excluded.description, excluded.genres,
                              excluded.maker, excluded.performers, excluded.release_date)
        returning (v.xmax = 0) as inserted""",
    "reviews": """
        insert into public.video_reviews as r (reviewer_id, video_id, rating, created_at)
        select s.reviewer_id, v.id, s.rating, s.created_at
        from import_staging s left join public.videos v on v.external_id = s.video_external_id
        order by s.line_number
        on conflict (reviewer_id, video_id) do update set
            rating = excluded.rating, created_at = excluded.created_at
        -- an older export re-imported later must not undo a newer review
        where (r.rating, r.created_at) is distinct from (excluded.rating, excluded.created_at)
          and excluded.created_at >= r.created_at
        returning (r.xmax = 0) as inserted""",
    "decisions": """
        insert into public.user_video_decisions (user_id, video_id, decision, created_at)
        select s.user_id, v.id, s.decision, s.created_at
        from import_staging s left join public.videos v on v.external_id = s.video_external_id
        order by s.line_number
        on conflict (user_id, video_id, created_at) do nothing
        returning true as inserted""",
}


def _reject_in_database(cur, kind: str) -> None:
    """Move the staged rows that repeat an earlier row's key or contradict the database over
    to the rejects.

    Imports of one kind take turns from here to their commit (a transaction lock): the checks
    and the merge must see the same database, or two files contradicting each other, imported
    at once, would both pass the check and the second would be counted unchanged."""
    cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"swiperec: import {kind}",))
    if kind == "decisions":
        cur.execute(_CONFLICTING_IN_FILE)
    cur.execute(_DUPLICATE.format(key=", ".join(KEYS[kind])))
    if kind != "videos":
        cur.execute(_UNKNOWN_VIDEO)
    if kind == "decisions":  # reviews may come before a release (screenings); swipes may not
        cur.execute(_BEFORE_RELEASE)
        cur.execute(_CONFLICTING_DECISION)


def _merge(cur, kind: str) -> tuple[int, int]:
    """Merge the staging table into the target; returns (inserted, updated). A row updated
    by `do update` has the merging transaction in xmax; a fresh insert has xmax = 0."""
    cur.execute(
        f"with merged as ({_MERGE[kind]}) "
        "select count(*) filter (where inserted), count(*) filter (where not inserted) from merged"
    )
    inserted, updated = cur.fetchone()
    return inserted, updated


def _record(cur, report: FileReport) -> None:
    """Write the `data_imports` row and move the rejects into `import_rejections`."""
    cur.execute("select category, count(*) from import_rejects group by category")
    report.rejections = Counter(dict(cur.fetchall()))
    report.rejected = report.rejections.total()
    report.unchanged = report.rows_read - report.rejected - report.inserted - report.updated
    if report.unchanged < 0:
        raise RuntimeError(f"{report.kind} import counts do not add up: {report}")
    counts = (report.rows_read, report.inserted, report.updated, report.unchanged, report.rejected)
    cur.execute(
        "insert into public.data_imports "
        "(kind, source, rows_read, inserted, updated, unchanged, rejected) "
        "values (%s, %s, %s, %s, %s, %s, %s) returning id",
        (report.kind, str(report.path.resolve()), *counts),
    )
    (report.import_id,) = cur.fetchone()
    cur.execute(
        "insert into public.import_rejections (import_id, line_number, category, reason, raw_line)"
        " select %s, line_number, category, reason, raw_line from import_rejects"
        " order by line_number",
        (report.import_id,),
    )
