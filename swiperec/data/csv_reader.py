"""Reading import CSVs: the header check, then each record with its first line and raw text.

`read_rows` streams a file's rows with the physical line each starts on and its raw text; a
record that cannot be split into the expected fields comes out as a `Rejection`. Turning the
values into typed ones, and refusing bad values, is `swiperec.data.validation`'s job.

Rules beyond the CSV format itself:
- Files are UTF-8 (a leading byte-order mark is ignored), decoded with `surrogateescape` so
  that one line with bad bytes is rejected on its own instead of failing the whole file.
- Header names are matched ignoring case and surrounding spaces, in any order; a missing or an
  unknown column makes the whole file unreadable (`ImportFileError`).
- Blank lines are not rows (as with `csv.DictReader`); they are counted, not rejected.
- A field may be up to `MAX_FIELD_CHARS` long (the values' own limits are validation's). A
  longer one stops the file there: the csv module cannot tell where such a record ends, and
  reading on from the next physical line could start inside its quoted text and turn that text
  into rows. The rest of the file is rejected as one record, with the lines it spans and its
  first `MAX_KEPT_CHARS` characters.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from swiperec.errors import SwiperecError

# Each file's header line, exactly as the files carry it (any order and case is accepted).
HEADERS = {
    "videos": "external_id,title,description,genres,maker,performers,release_date",
    "reviews": "reviewer_id,video_external_id,rating,created_at",
    "decisions": "user_id,video_external_id,decision,created_at",
}
COLUMNS = {kind: tuple(header.split(",")) for kind, header in HEADERS.items()}
IMPORT_ORDER = ("videos", "reviews", "decisions")  # decisions and reviews refer to videos

_INVALID_BYTES = re.compile("[\udc80-\udcff]+")  # what surrogateescape makes of bad bytes
MAX_FIELD_CHARS = 8 << 20  # 8 Mi characters: far above any valid value
MAX_KEPT_CHARS = 1 << 20  # of a rejected rest of a file, the first 1 Mi characters are kept
csv.field_size_limit(MAX_FIELD_CHARS)


class ImportFileError(SwiperecError):
    """The file cannot be imported at all: missing, not a file, empty, or a wrong header."""


@dataclass(frozen=True)
class Rejection:
    """A row the import refuses: where it starts, why (a category and a sentence), its text."""

    line_number: int
    category: str
    reason: str
    raw_line: str


class CsvRow(NamedTuple):
    """One CSV record: the physical line it starts on, its raw text, its values by column."""

    line_number: int
    raw_line: str
    values: dict[str, str]


def check_header(kind: str, path: Path) -> None:
    """Raise `ImportFileError` unless `path` is a readable CSV with exactly `kind`'s columns."""
    rows = read_rows(kind, path)
    next(rows, None)
    rows.close()


def read_rows(kind: str, path: Path) -> Iterator[CsvRow | Rejection | int]:
    """The rows of an import file in order: a `CsvRow` per record, a `Rejection` for a record
    that cannot be split into the expected fields, and an `int` (its line number) per blank
    line. Raises `ImportFileError` before yielding anything when the file is unreadable."""
    expected = COLUMNS[kind]
    path = Path(path)
    if not path.exists():
        raise ImportFileError(f"{kind} file {path} does not exist")
    if not path.is_file():
        raise ImportFileError(f"{kind} file {path} is not a file")
    try:
        binary = open(path, "rb")  # noqa: SIM115 (closed by the text wrapper below)
    except OSError as error:
        raise ImportFileError(f"{kind} file {path} cannot be read: {error}") from error
    with io.TextIOWrapper(
        binary, encoding="utf-8-sig", errors="surrogateescape", newline=""
    ) as text:
        lines = _LineTap(text)
        records = csv.reader(lines)
        order = _read_header(kind, path, expected, records, lines)
        while True:
            start = lines.count + 1
            try:
                fields = next(records)
            except StopIteration:
                return
            except csv.Error as error:
                # Where the broken record ends is unknown: reading on could start inside it.
                raw = lines.take()[:MAX_KEPT_CHARS] + lines.skip_rest(MAX_KEPT_CHARS)
                span = f"lines {start}-{lines.count}" if lines.count > start else f"line {start}"
                yield _reject(
                    start, "unreadable_csv",
                    f"cannot parse as CSV: {error}; the rest of the file ({span}) is not read, "
                    "since where this record ends cannot be told", raw,
                )  # fmt: skip
                return
            raw = lines.take()
            if not fields:
                yield start
            elif len(fields) != len(expected):
                yield _reject(
                    start, "wrong_field_count", _field_count(expected, fields, start, lines), raw
                )
            else:
                yield CsvRow(start, _strip_line_end(raw), dict(zip(order, fields, strict=True)))


def _read_header(kind, path, expected, records, lines) -> tuple[str, ...]:
    """The column name of each field position, after checking the header names `expected`."""
    header: list[str] = []
    try:
        while not header:  # blank lines before the header are not content
            header = next(records)
    except StopIteration:
        raise ImportFileError(f"{kind} file {path} is empty: expected a header row") from None
    except csv.Error as error:
        raise ImportFileError(f"{kind} file {path}: cannot parse the header: {error}") from None
    finally:
        lines.take()
    found = [name.strip().lower() for name in header]
    problems = []
    if any(_INVALID_BYTES.search(name) for name in found):
        problems.append("the header is not valid UTF-8")
    missing = [name for name in expected if name not in found]
    unknown = [name for name in found if name not in expected]
    repeated = sorted({name for name in found if found.count(name) > 1})
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown columns: {', '.join(map(_column_name, unknown))}")
    if repeated:
        problems.append(f"repeated columns: {', '.join(repeated)}")
    if problems:
        raise ImportFileError(
            f"{kind} file {path} has a wrong header ({'; '.join(problems)}). "
            f"Expected columns: {','.join(expected)}; found: {','.join(map(_column_name, found))}"
        )
    return tuple(found)


class _LineTap:
    """Hands physical lines to the csv reader while keeping the text of the record being read,
    so each record has its raw text and the line number it starts on."""

    def __init__(self, text: io.TextIOBase):
        self._lines = iter(text)
        self._taken: list[str] = []
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._taken.append(line)
        self.count += 1
        return line

    def take(self) -> str:
        raw, self._taken = "".join(self._taken), []
        return raw

    def skip_rest(self, keep: int) -> str:
        """Read every line not read yet, counting them, and return the first `keep` characters
        of them: the rest of a file of any size, in bounded memory."""
        kept: list[str] = []
        size = 0
        for line in self._lines:
            self.count += 1
            if size < keep:
                kept.append(line[: keep - size])
                size += len(kept[-1])
        self._taken = []
        return "".join(kept)


def _field_count(expected, fields, start: int, lines: _LineTap) -> str:
    reason = f"expected {len(expected)} fields ({','.join(expected)}), got {len(fields)}"
    if lines.count > start:
        reason += f"; the row spans lines {start}-{lines.count}: is a quote unbalanced?"
    elif len(fields) > len(expected):
        reason += "; a value containing a comma must be quoted"
    return reason


def storable(text: str) -> str:
    """`text` in a form PostgreSQL accepts: undecodable bytes and NUL written as `\\xNN`."""
    if not _INVALID_BYTES.search(text) and "\x00" not in text:
        return text
    fixed = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return fixed.replace("\x00", "\\x00")


def _column_name(name: str) -> str:
    return name if name.isprintable() and "," not in name else repr(name)


def _strip_line_end(raw: str) -> str:
    return raw.removesuffix("\n").removesuffix("\r")


def _reject(line_number: int, category: str, reason: str, raw_line: str) -> Rejection:
    return Rejection(line_number, category, storable(reason), storable(_strip_line_end(raw_line)))
