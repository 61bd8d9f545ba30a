"""Validating the rows of import CSVs, one row at a time.

`RowValidator` turns each row `swiperec.data.csv_reader.read_rows` reads into typed values or a
`Rejection` whose reason a person can act on. Nothing here touches the database: the checks that
need it or the whole file (duplicates, unknown videos, conflicting decisions) live in
`swiperec.data.importer`.

Rules beyond the file formats themselves:
- Surrounding whitespace is stripped from every value; an empty optional value is NULL; list
  items are stripped, empty items dropped, repeats dropped. Line breaks inside text are stored
  as `\\n`.
- Timestamps without an offset are read as UTC. A date-only `created_at` means midnight UTC.
- A time is "in the future" after `now` + 5 minutes; a release date is in the future when it is
  later than today's date anywhere on Earth (UTC+14) at that moment, so a title released today
  in Japan is not refused while it is still yesterday in UTC. A swipe or review before
  `EARLIEST_TIME` (2000) is refused as a wrong date, not kept as history.
- Text holds no control characters (C0 but tab and line breaks, DEL, C1), no bidirectional
  overrides or isolates and no zero-width characters: invisible, they make two ids that look
  the same differ, or reorder what a title shows (the zero-width joiners of emoji and of
  Persian and Indic words are text, but not ids). Lengths are capped (`MAX_LENGTHS`, list items
  `MAX_LIST_ITEMS` of at most `MAX_ITEM_LENGTH` characters).
- The nil UUID is not a user.
"""

from __future__ import annotations

import re
import uuid
from collections import namedtuple
from datetime import UTC, date, datetime, timedelta

from swiperec.data.csv_reader import (
    _INVALID_BYTES,
    COLUMNS,
    IMPORT_ORDER,
    CsvRow,
    Rejection,
    _reject,
)

MAX_ID_LENGTH = 200
MAX_LENGTHS = {"title": 500, "description": 20_000, "maker": 200}
MAX_LIST_ITEMS, MAX_ITEM_LENGTH = 200, 200
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(minutes=5)
LIST_SEPARATOR = "|"
DECISIONS = ("like", "nope")

# C0 except tab, \n, \r; DEL and C1; bidi embeddings, overrides and isolates; zero-width
# space, word joiner, BOM. The zero-width (non-)joiners U+200C/U+200D are parts of emoji and of
# Persian and Indic words: text may hold them, ids may not (`_ID_INVISIBLE`).
_INVISIBLE = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200b\u2060\ufeff"
_CONTROL = re.compile(f"[{_INVISIBLE}]")
_SUSPECT = re.compile(f"[{_INVISIBLE}\ufffd\udc80-\udcff]")
_JOINERS = re.compile("[\u200c\u200d]")
_LINE_OR_TAB = re.compile(r"[\t\n\r]")
_LINE_BREAK = re.compile(r"\r\n?")
_RATING = re.compile(r"[0-9]+")
_EARTH_LEAD = timedelta(hours=14)  # the earliest time zone (UTC+14) sees a date first


# The typed values of a good row (VideoRow, ReviewRow, DecisionRow), fields as COLUMNS: text
# stripped (empty optional text is None), lists as list[str], release_date a date or None,
# created_at an aware UTC datetime, user_id a uuid.UUID, rating an int, decision like/nope.
ROW_TYPES = {kind: namedtuple(f"{kind[:-1].title()}Row", names) for kind, names in COLUMNS.items()}

# What makes two rows of a file the same row (the target table's key); a later row with the
# key of an earlier good row is a duplicate (checked in the staging table, which scales).
KEYS = {
    "videos": ("external_id",),
    "reviews": ("reviewer_id", "video_external_id"),
    "decisions": ("user_id", "video_external_id", "created_at"),
}


class _Invalid(Exception):
    """One problem with one value: a short category for counting and a sentence for people."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category


class RowValidator:
    """Validates rows of one kind: typed values (a `ROW_TYPES` tuple) for a good row, a
    `Rejection` naming every problem for a bad one. `now` fixes what counts as a future time
    (naive means UTC)."""

    def __init__(self, kind: str, now: datetime):
        if kind not in COLUMNS:
            raise ValueError(f"unknown import kind {kind!r}; expected one of {IMPORT_ORDER}")
        self.kind = kind
        self.latest_time = _as_utc(now) + FUTURE_TOLERANCE
        self.latest_date = (self.latest_time + _EARTH_LEAD).date()
        self._parsers = [(name, _FIELDS[name][0]) for name in COLUMNS[kind]]

    def validate(self, row: CsvRow | Rejection):
        """The row's typed values, or its `Rejection` (a row that could not be split passes
        through); the category is that of the row's first problem."""
        if isinstance(row, Rejection):
            return row
        values, problems = [], []
        for name, parse in self._parsers:
            try:
                values.append(parse(self, name, row.values[name]))
            except _Invalid as problem:
                problems.append(problem)
        if problems:
            reason = "; ".join(map(str, problems))
            return _reject(row.line_number, problems[0].category, reason, row.raw_line)
        return ROW_TYPES[self.kind](*values)

    def identifier(self, name: str, value: str) -> str:
        value = self.required(name, value)
        joiner = _JOINERS.search(value)
        if joiner:
            raise _Invalid(
                "control_character", f"{name} contains control character {_show(joiner.group())}"
            )
        if len(value) > MAX_ID_LENGTH:
            raise _Invalid(
                "too_long", f"{name} is longer than {MAX_ID_LENGTH} characters ({len(value)})"
            )
        return value

    def required(self, name: str, value: str, *, single_line: bool = True) -> str:
        value = _clean(name, value, single_line=single_line)
        if not value:
            raise _Invalid("missing_value", f"{name} is empty")
        return value

    def title(self, name: str, value: str) -> str:
        return _capped(name, self.required(name, value, single_line=False), MAX_LENGTHS[name])

    def text(self, name: str, value: str) -> str | None:
        return _capped(name, _clean(name, value, single_line=False), MAX_LENGTHS[name]) or None

    def text_list(self, name: str, value: str) -> list[str]:
        items = [
            item.strip() for item in _clean(name, value, single_line=False).split(LIST_SEPARATOR)
        ]
        for item in items:
            if _LINE_OR_TAB.search(item):
                raise _Invalid(
                    "control_character", f"{name} item {_show(item)} contains a line break or tab"
                )
            _capped(f"{name} item", item, MAX_ITEM_LENGTH)
        kept = list(dict.fromkeys(item for item in items if item))
        if len(kept) > MAX_LIST_ITEMS:
            raise _Invalid("too_long", f"{name} has {len(kept)} items, more than {MAX_LIST_ITEMS}")
        return kept

    def release_date(self, name: str, value: str) -> date | None:
        value = _clean(name, value)
        if not value:
            return None
        try:
            released = date.fromisoformat(value)
        except ValueError:
            try:
                released = datetime.fromisoformat(value).date()  # as written, not in UTC
            except ValueError:
                raise _Invalid(
                    "invalid_date", f"{name} must be an ISO date, got {_show(value)}"
                ) from None
        if released > self.latest_date:
            raise _Invalid("future_time", f"{name} {released.isoformat()} is in the future")
        return released

    def timestamp(self, name: str, value: str) -> datetime:
        value = self.required(name, value)
        try:
            instant = _as_utc(datetime.fromisoformat(value))
        except (ValueError, OverflowError):
            raise _Invalid(
                "invalid_timestamp", f"{name} must be an ISO 8601 timestamp, got {_show(value)}"
            ) from None
        if instant > self.latest_time:
            latest = self.latest_time.isoformat(timespec="seconds")
            raise _Invalid("future_time", f"{name} {value} is in the future (later than {latest})")
        if instant < EARLIEST_TIME:
            raise _Invalid(
                "past_time", f"{name} {value} is before {EARLIEST_TIME.date()}: a wrong date"
            )
        return instant

    def user_id(self, name: str, value: str) -> uuid.UUID:
        value = self.required(name, value)
        try:
            user = uuid.UUID(value)
        except ValueError:
            raise _Invalid("invalid_uuid", f"{name} must be a UUID, got {_show(value)}") from None
        if user.int == 0:
            raise _Invalid("invalid_uuid", f"{name} is the nil UUID, which names no user")
        return user

    def decision(self, name: str, value: str) -> str:
        value = _clean(name, value)
        if value.lower() not in DECISIONS:
            raise _Invalid(
                "invalid_decision", f"{name} must be 'like' or 'nope', got {_show(value)}"
            )
        return value.lower()

    def rating(self, name: str, value: str) -> int:
        value = _clean(name, value)
        if not (_RATING.fullmatch(value) and 1 <= int(value) <= 5):
            raise _Invalid(
                "invalid_rating", f"{name} must be an integer from 1 to 5, got {_show(value)}"
            )
        return int(value)


# Each column's parser, and the type of its value as `swiperec.db.binary_copy` names it.
_FIELDS = {
    "external_id": (RowValidator.identifier, "text"),
    "title": (RowValidator.title, "text"),
    "description": (RowValidator.text, "text"),
    "genres": (RowValidator.text_list, "text[]"),
    "maker": (RowValidator.text, "text"),
    "performers": (RowValidator.text_list, "text[]"),
    "release_date": (RowValidator.release_date, "date"),
    "reviewer_id": (RowValidator.identifier, "text"),
    "video_external_id": (RowValidator.identifier, "text"),
    "rating": (RowValidator.rating, "int2"),
    "created_at": (RowValidator.timestamp, "timestamptz"),
    "user_id": (RowValidator.user_id, "uuid"),
    "decision": (RowValidator.decision, "text"),
}
PG_TYPES = {name: pg_type for name, (_, pg_type) in _FIELDS.items()}


def _clean(name: str, value: str, *, single_line: bool = True) -> str:
    """The value without surrounding whitespace and with `\\n` line breaks, unless it holds
    undecodable bytes, U+FFFD, a control character (PostgreSQL text cannot hold NUL), or a
    tab or line break where the value must be one line."""
    if not _SUSPECT.search(value):  # the common case: one scan instead of three
        value = value.strip()
        if single_line and _LINE_OR_TAB.search(value):
            raise _Invalid("control_character", f"{name} contains a line break or tab")
        return _LINE_BREAK.sub("\n", value)
    bad = _INVALID_BYTES.search(value)
    if bad:
        shown = "".join(f"\\x{ord(c) - 0xDC00:02x}" for c in bad.group()[:8])
        raise _Invalid("invalid_utf8", f"{name} is not valid UTF-8 (bytes {shown})")
    if "\ufffd" in value:
        message = f"{name} contains U+FFFD (the text was mis-decoded before it was exported)"
        raise _Invalid("replacement_character", message)
    # Checked before strip(), which would drop some control characters silently.
    control = _CONTROL.search(value).group()
    raise _Invalid("control_character", f"{name} contains control character {_show(control)}")


def _capped(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise _Invalid("too_long", f"{name} is longer than {limit} characters ({len(value)})")
    return value


def _as_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def _show(value: str, limit: int = 60) -> str:
    """A value quoted for a message; repr escapes control characters and undecodable bytes."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
