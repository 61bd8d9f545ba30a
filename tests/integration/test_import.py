"""CSV import against a real PostgreSQL: loading, the quarantine, re-imports and atomicity.

The CSVs are written by each test, so the expected line numbers sit next to the rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import psycopg2
import pytest

from swiperec.data import importer
from swiperec.data.importer import ImportFileError, import_files

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ALICE = uuid.UUID("0b0d5d1e-6a43-4f4e-9b55-3f1e5c1d2a01")
BOB = uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")

VIDEOS_HEADER = "external_id,title,description,genres,maker,performers,release_date\n"
REVIEWS_HEADER = "reviewer_id,video_external_id,rating,created_at\n"
DECISIONS_HEADER = "user_id,video_external_id,decision,created_at\n"

GOOD_VIDEOS = VIDEOS_HEADER + (
    'v1,夏の終わりの物語,"A story, with commas\nand a second line",ドラマ|ロマンス,スタジオA,'
    "山田花子|佐藤太郎,2024-07-01\n"
    "v2,Plain Title,,,,,\n"
    'v3,"Quoted ""title""",desc, Action | Comedy ||Action,Maker B,Solo,2025-01-15T23:30:00+09:00\n'
)
GOOD_REVIEWS = REVIEWS_HEADER + (
    "r1,v1,5,2025-03-01T10:00:00Z\n"  # UTC
    "r1,v2,1,2025-03-01T10:05:00+09:00\n"  # an offset
    "r2,v3,3,2025-03-02 08:00:00\n"  # naive: read as UTC
)
GOOD_DECISIONS = DECISIONS_HEADER + (
    f"{ALICE},v1,like,2025-04-01T12:00:00Z\n"
    f"{ALICE},v2, NOPE ,2025-04-01T12:00:01.123456+02:00\n"
    f"{BOB},v1,Like,2025-04-02T00:00:00\n"
    f"{ALICE},v1,nope,2025-04-03T00:00:00Z\n"
)


def write(directory, name: str, content: str | bytes):
    path = directory / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def good_files(tmp_path) -> dict:
    return {
        "videos": write(tmp_path, "videos.csv", GOOD_VIDEOS),
        "reviews": write(tmp_path, "reviews.csv", GOOD_REVIEWS),
        "decisions": write(tmp_path, "decisions.csv", GOOD_DECISIONS),
    }


def query(conn, sql: str, params=()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    conn.rollback()
    return rows


TABLES = ("videos", "video_reviews", "user_video_decisions", "data_imports", "import_rejections")


def table_counts(conn) -> dict[str, int]:
    return {t: query(conn, f"select count(*) from {t}")[0][0] for t in TABLES}


def rejections(conn, import_id: int) -> dict[int, tuple[str, str]]:
    rows = query(
        conn,
        "select line_number, reason, raw_line from import_rejections where import_id = %s",
        (import_id,),
    )
    return {line: (reason, raw) for line, reason, raw in rows}


def test_good_files_load_completely_and_round_trip(conn, tmp_path):
    progress = []
    report = import_files(
        conn, **good_files(tmp_path), now=NOW, progress=lambda *a: progress.append(a)
    )

    assert [(r.kind, r.rows_read, r.inserted, r.rejected) for r in report.files] == [
        ("videos", 3, 3, 0),
        ("reviews", 3, 3, 0),
        ("decisions", 4, 4, 0),
    ]
    assert report.exit_code == 0
    assert progress[-1] == ("decisions", 4)
    assert table_counts(conn) == {
        "videos": 3,
        "video_reviews": 3,
        "user_video_decisions": 4,
        "data_imports": 3,
        "import_rejections": 0,
    }
    videos = {
        row[0]: row[1:]
        for row in query(
            conn,
            "select external_id, title, description, genres, maker, performers, release_date "
            "from videos",
        )
    }
    assert videos["v1"] == (
        "夏の終わりの物語",
        "A story, with commas\nand a second line",
        ["ドラマ", "ロマンス"],
        "スタジオA",
        ["山田花子", "佐藤太郎"],
        date(2024, 7, 1),
    )
    assert videos["v2"] == ("Plain Title", None, [], None, [], None)
    # A release timestamp keeps the date as written (+09:00), list items are stripped, deduped.
    assert videos["v3"] == (
        'Quoted "title"',
        "desc",
        ["Action", "Comedy"],
        "Maker B",
        ["Solo"],
        date(2025, 1, 15),
    )

    reviews = query(
        conn,
        "select r.reviewer_id, v.external_id, r.rating, r.created_at "
        "from video_reviews r join videos v on v.id = r.video_id order by 1, 2",
    )
    assert reviews == [
        ("r1", "v1", 5, datetime(2025, 3, 1, 10, 0, tzinfo=UTC)),
        ("r1", "v2", 1, datetime(2025, 3, 1, 1, 5, tzinfo=UTC)),
        ("r2", "v3", 3, datetime(2025, 3, 2, 8, 0, tzinfo=UTC)),  # naive read as UTC
    ]
    decisions = query(
        conn,
        "select d.user_id::text, v.external_id, d.decision, d.created_at "
        "from user_video_decisions d join videos v on v.id = d.video_id order by 4",
    )
    assert decisions == [
        (str(ALICE), "v2", "nope", datetime(2025, 4, 1, 10, 0, 1, 123456, tzinfo=UTC)),
        (str(ALICE), "v1", "like", datetime(2025, 4, 1, 12, 0, tzinfo=UTC)),
        (str(BOB), "v1", "like", datetime(2025, 4, 2, 0, 0, tzinfo=UTC)),
        (str(ALICE), "v1", "nope", datetime(2025, 4, 3, 0, 0, tzinfo=UTC)),
    ]
    imports = query(
        conn, "select kind, rows_read, inserted, rejected from data_imports order by id"
    )
    assert imports == [("videos", 3, 3, 0), ("reviews", 3, 3, 0), ("decisions", 4, 4, 0)]


def test_crlf_bom_reordered_header_and_blank_lines(conn, tmp_path):
    content = (
        "\ufefftitle, EXTERNAL_ID ,description,genres,maker,performers,release_date\r\n"
        'Windows,w1,"line one\r\nline two",,,,\r\n'
        "\r\n"
        "Second,w2,,,,,2026-11-25\r\n"  # already the 25th in UTC+14 at NOW
    )
    report = import_files(conn, videos=write(tmp_path, "videos.csv", content), now=NOW)

    assert (report["videos"].inserted, report["videos"].blank_lines) == (2, 1)
    assert query(conn, "select external_id, description, release_date from videos order by 1") == [
        ("w1", "line one\nline two", None),
        ("w2", None, date(2026, 11, 25)),
    ]


BROKEN_VIDEOS = (
    VIDEOS_HEADER.encode()  # line 1
    + b"good1,Good one,,,,,\n"  # 2
    + b"too,many,fields,a,b,c,d,e\n"  # 3
    + b"bad-utf8,Bad \xff\xfe bytes,,,,,\n"  # 4
    + "fffd,Mis\ufffddecoded,,,,,\n".encode()  # 5
    + b"nul,Has\x00nul,,,,,\n"  # 6
    + b'"  ",No id,,,,,\n'  # 7
    + b"empty-title,   ,,,,,\n"  # 8
    + b"x" * 201
    + b",Long id,,,,,\n"  # 9
    + b"bad-date,Bad date,,,,,2024-13-45\n"  # 10
    + b"future-date,Future,,,,,2027-01-01\n"  # 11
    + b"good1,Again,,,,,\n"  # 12
    + b'good2,Good two,"spans\nlines",,,,\n'  # 13-14
    + b'unbalanced,"quote,,,,,\n'  # 15 to the end: one row with the rest of the file
    + b"lost,Lost,,,,,\n"  # 16
)
BROKEN_DECISIONS = DECISIONS_HEADER + (
    f"{ALICE},good1,like,2026-11-01T00:00:00Z\n"  # 2
    f"{ALICE},good1,maybe,2026-11-01T00:00:01Z\n"  # 3
    "not-a-uuid,good1,like,2026-11-01T00:00:02Z\n"  # 4
    f"{ALICE},good1,like,yesterday\n"  # 5
    f"{ALICE},good1,like,2026-11-24T12:06:00Z\n"  # 6: after now + 5 minutes
    f"{ALICE},no-such-video,like,2026-11-01T00:00:03Z\n"  # 7
    f"{ALICE},good1,LIKE,2026-11-01T09:00:00+09:00\n"  # 8: the same instant as line 2
    f"{BOB},good2,nope,2026-11-24T12:04:59Z\n"  # 9: within the tolerance
    f"{BOB},bad-utf8,nope,2026-11-01T00:00:00Z\n"  # 10: its video was rejected
)
BROKEN_REVIEWS = REVIEWS_HEADER + (
    "r1,good1,5,2026-01-01T00:00:00Z\n"  # 2
    "r2,good1,0,2026-01-01T00:00:00Z\n"  # 3
    "r3,good1,4.5,2026-01-01T00:00:00Z\n"  # 4
    "r4,good1,five,2026-01-01T00:00:00Z\n"  # 5
    "r1,good1,4,2026-01-02T00:00:00Z\n"  # 6
    ",good1,3,2026-01-01T00:00:00Z\n"  # 7
    "r5,good2,6,not a time\n"  # 8: two problems, both named
    "r6,good2,3,2026-11-24T13:00:00+09:00\n"  # 9
)


def test_broken_rows_are_quarantined_and_good_rows_load(conn, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "CHUNK_ROWS", 3)  # exercise staging in several chunks
    report = import_files(
        conn,
        videos=write(tmp_path, "videos.csv", BROKEN_VIDEOS),
        decisions=write(tmp_path, "decisions.csv", BROKEN_DECISIONS),
        reviews=write(tmp_path, "reviews.csv", BROKEN_REVIEWS),
        now=NOW,
    )

    videos = rejections(conn, report["videos"].import_id)
    expected_videos = {
        3: "expected 7 fields",
        4: "title is not valid UTF-8 (bytes \\xff\\xfe)",
        5: "title contains U+FFFD",
        6: "title contains control character '\\x00'",
        7: "external_id is empty",
        8: "title is empty",
        9: "external_id is longer than 200 characters (201)",
        10: "release_date must be an ISO date, got '2024-13-45'",
        11: "release_date 2027-01-01 is in the future",
        12: "duplicate of line 2 (same external_id)",
        15: "the row spans lines 15-16: is a quote unbalanced?",
    }
    assert sorted(videos) == sorted(expected_videos)
    for line, fragment in expected_videos.items():
        assert fragment in videos[line][0], (line, videos[line])
    assert videos[4][1] == "bad-utf8,Bad \\xff\\xfe bytes,,,,,"  # bad bytes kept, escaped
    assert videos[6][1] == "nul,Has\\x00nul,,,,,"
    assert videos[15][1] == 'unbalanced,"quote,,,,,\nlost,Lost,,,,,'

    decisions = rejections(conn, report["decisions"].import_id)
    expected_decisions = {
        3: "decision must be 'like' or 'nope', got 'maybe'",
        4: "user_id must be a UUID, got 'not-a-uuid'",
        5: "created_at must be an ISO 8601 timestamp, got 'yesterday'",
        6: "created_at 2026-11-24T12:06:00Z is in the future",
        7: "unknown video 'no-such-video'",
        8: "duplicate of line 2 (same user_id, video_external_id, created_at)",
        10: "unknown video 'bad-utf8'",
    }
    assert sorted(decisions) == sorted(expected_decisions)
    for line, fragment in expected_decisions.items():
        assert fragment in decisions[line][0], (line, decisions[line])
    assert decisions[7][1] == f"{ALICE},no-such-video,like,2026-11-01T00:00:03Z"

    reviews = rejections(conn, report["reviews"].import_id)
    assert {line: reason for line, (reason, _) in reviews.items()} == {
        3: "rating must be an integer from 1 to 5, got '0'",
        4: "rating must be an integer from 1 to 5, got '4.5'",
        5: "rating must be an integer from 1 to 5, got 'five'",
        6: "duplicate of line 2 (same reviewer_id, video_external_id)",
        7: "reviewer_id is empty",
        8: "rating must be an integer from 1 to 5, got '6'; "
        "created_at must be an ISO 8601 timestamp, got 'not a time'",
    }

    counts = {
        r.kind: (r.rows_read, r.inserted, r.rejected, r.valid + r.rejected) for r in report.files
    }
    assert counts == {"videos": (13, 2, 11, 13), "reviews": (8, 2, 6, 8), "decisions": (9, 2, 7, 9)}
    assert report["videos"].rejections["invalid_utf8"] == 1
    assert report["decisions"].rejections == {
        "invalid_decision": 1,
        "invalid_uuid": 1,
        "invalid_timestamp": 1,
        "future_time": 1,
        "unknown_video": 2,
        "duplicate": 1,
    }
    stored_categories = query(
        conn,
        "select category, count(*) from import_rejections where import_id = %s group by 1",
        (report["decisions"].import_id,),
    )
    assert dict(stored_categories) == report["decisions"].rejections
    assert query(conn, "select external_id from videos order by 1") == [("good1",), ("good2",)]
    assert table_counts(conn)["user_video_decisions"] == 2
    assert table_counts(conn)["video_reviews"] == 2
    stored = query(
        conn, "select rows_read, inserted + updated + unchanged, rejected from data_imports"
    )
    assert all(read == valid + rejected for read, valid, rejected in stored)
    assert report.exit_code == 0
    summary = report.format_report()
    assert "videos: videos.csv" in summary and "1 invalid_utf8" in summary


def test_reimport_adds_nothing_and_a_change_counts_as_updated(conn, tmp_path):
    files = good_files(tmp_path)
    import_files(conn, **files, now=NOW)
    before = table_counts(conn)

    again = import_files(conn, **files, now=NOW)

    assert [(r.inserted, r.updated, r.unchanged, r.rejected) for r in again.files] == [
        (0, 0, 3, 0),
        (0, 0, 3, 0),
        (0, 0, 4, 0),
    ]
    after = table_counts(conn)
    assert after["data_imports"] == before["data_imports"] + 3
    assert {k: v for k, v in after.items() if k != "data_imports"} == {
        k: v for k, v in before.items() if k != "data_imports"
    }

    write(tmp_path, "videos.csv", GOOD_VIDEOS.replace("Plain Title", "Renamed Title"))
    write(tmp_path, "reviews.csv", GOOD_REVIEWS.replace("r2,v3,3", "r2,v3,4"))
    write(tmp_path, "decisions.csv", GOOD_DECISIONS.replace(" NOPE ", "like"))
    changed = import_files(conn, **files, now=NOW)

    assert [(r.inserted, r.updated, r.unchanged, r.rejected) for r in changed.files] == [
        (0, 1, 2, 0),
        (0, 1, 2, 0),
        (0, 0, 3, 1),  # an event already recorded as 'nope' cannot become 'like'
    ]
    assert query(conn, "select title from videos where external_id = 'v2'") == [("Renamed Title",)]
    assert query(conn, "select rating from video_reviews where reviewer_id = 'r2'") == [(4,)]
    (reason, _) = rejections(conn, changed["decisions"].import_id)[3]
    assert reason.startswith("decision 'like' contradicts 'nope' already recorded")


def test_decisions_may_refer_to_videos_of_the_same_run_only(conn, tmp_path):
    decisions = write(tmp_path, "decisions.csv", GOOD_DECISIONS)

    alone = import_files(conn, decisions=decisions, now=NOW)
    assert alone["decisions"].rejections == {"unknown_video": 4}
    assert alone.exit_code == 1

    videos = write(tmp_path, "videos.csv", GOOD_VIDEOS)
    together = import_files(conn, videos=videos, decisions=decisions, now=NOW)
    assert (together["decisions"].inserted, together["decisions"].rejected) == (4, 0)


def test_only_bad_rows_give_a_failing_exit_code(conn, tmp_path):
    reviews = write(tmp_path, "reviews.csv", REVIEWS_HEADER + "r1,v1,9,2025-01-01\n")
    report = import_files(conn, reviews=reviews, now=NOW)

    assert (report["reviews"].rejected, report.exit_code) == (1, 1)
    assert "Nothing was loaded" in report.format_report()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("directory", "is not a file"),
        (b"", "is empty: expected a header row"),
        (b"\n\n", "is empty: expected a header row"),
        (
            b"user_id,video_external_id\nu,v\n",
            r"missing columns: decision, created_at\)\. Expected columns: "
            r"user_id,video_external_id,decision,created_at; found: user_id,video_external_id$",
        ),
        (DECISIONS_HEADER.strip() + ",rating\n", "unknown columns: rating"),
    ],
)
def test_unreadable_file_raises_before_anything_is_loaded(conn, tmp_path, content, message):
    videos = write(tmp_path, "videos.csv", GOOD_VIDEOS)
    decisions = tmp_path / "decisions.csv"
    if content == "directory":
        decisions.mkdir()
    elif content is not None:
        write(tmp_path, "decisions.csv", content)

    with pytest.raises(ImportFileError, match=message):
        import_files(conn, videos=videos, decisions=decisions, now=NOW)

    assert table_counts(conn)["videos"] == 0
    assert table_counts(conn)["data_imports"] == 0


def fail_on_insert(conn, table: str, condition: str = "true") -> None:
    """A real fault in the database: a trigger that makes inserts into `table` fail."""
    with conn.cursor() as cur:
        cur.execute(
            "create function crash() returns trigger language plpgsql as "
            "$$ begin raise exception 'simulated crash'; end $$"
        )
        cur.execute(
            f"create trigger crash before insert on {table} for each row "
            f"when ({condition}) execute function crash()"
        )
    conn.commit()


def test_a_crash_in_the_merge_leaves_no_partial_file(conn, tmp_path):
    videos = GOOD_VIDEOS + "bad,,,,,,\n" + "v4,CRASH,,,,,\n" + "v5,After,,,,,\n"
    fail_on_insert(conn, "videos", "new.title = 'CRASH'")

    with pytest.raises(psycopg2.errors.RaiseException, match="simulated crash"):
        import_files(conn, videos=write(tmp_path, "videos.csv", videos), now=NOW)

    assert table_counts(conn) == dict.fromkeys(TABLES, 0)


def test_a_crash_after_the_merge_rolls_back_the_whole_file(conn, tmp_path):
    # The quarantine is written last: failing there proves the merged rows go back too.
    fail_on_insert(conn, "import_rejections")
    videos = write(tmp_path, "videos.csv", GOOD_VIDEOS + "bad,,,,,,\n")

    with pytest.raises(psycopg2.errors.RaiseException):
        import_files(conn, videos=videos, now=NOW)

    assert table_counts(conn) == dict.fromkeys(TABLES, 0)


def test_a_crash_in_a_later_file_keeps_the_earlier_files(conn, tmp_path):
    fail_on_insert(conn, "user_video_decisions")
    files = good_files(tmp_path)

    with pytest.raises(psycopg2.errors.RaiseException):
        import_files(conn, **files, now=NOW)

    counts = table_counts(conn)
    assert (counts["videos"], counts["video_reviews"], counts["user_video_decisions"]) == (3, 3, 0)
    assert query(conn, "select kind from data_imports order by id") == [("videos",), ("reviews",)]


def test_an_over_long_field_never_smuggles_a_row_in(conn, tmp_path):
    """A quoted description holding a line that looks like a row: read as one record, it is
    one video (refused for its length); past the reader's field limit, the file stops there and
    the rest is rejected as one record, never read on from inside the quoted text."""
    from swiperec.data import csv_reader

    smuggling = "x" * 70_000 + "\nsmuggled,Smuggled,,,,,2024-01-01\n" + "y" * 70_000
    content = VIDEOS_HEADER + f'v1,Long,"{smuggling}",,,,\n' + "v2,After,,,,,\n"
    report = import_files(conn, videos=write(tmp_path, "videos.csv", content), now=NOW)
    assert (report["videos"].rows_read, report["videos"].inserted) == (2, 1)
    assert query(conn, "select external_id from videos order by 1") == [("v2",)]
    [(reason, _)] = rejections(conn, report["videos"].import_id).values()
    assert reason == "description is longer than 20000 characters (140034)"

    csv_reader.csv.field_size_limit(1000)  # a small limit stands in for an 8 Mi field
    try:
        big = "z" * 5_000 + "\nsmuggled2,Smuggled,,,,,2024-01-01\n" + "z" * 10
        content = VIDEOS_HEADER + "v3,Before,,,,,\n" + f'v4,Big,"{big}",,,,\n' + "v5,After,,,,,\n"
        report = import_files(conn, videos=write(tmp_path, "videos2.csv", content), now=NOW)
    finally:
        csv_reader.csv.field_size_limit(csv_reader.MAX_FIELD_CHARS)
    assert query(conn, "select external_id from videos order by 1") == [("v2",), ("v3",)]
    [(line, (reason, raw))] = rejections(conn, report["videos"].import_id).items()
    assert line == 3 and "the rest of the file (lines 3-6) is not read" in reason
    assert "smuggled2" in raw and raw.endswith("v5,After,,,,,")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("v1,\u202etxet desrever,,,,,", "title contains control character '\\u202e'"),
        ("v1\u200b,Zero width,,,,,", "external_id contains control character '\\u200b'"),
        ("v1,DEL \x7f here,,,,,", "title contains control character '\\x7f'"),
        ("v1,C1 \x85 here,,,,,", "title contains control character '\\x85'"),
        ("v1," + "t" * 501 + ",,,,,", "title is longer than 500 characters (501)"),
        ("v1,T,,," + "m" * 201 + ",,", "maker is longer than 200 characters (201)"),
        ("v1,T,," + "|".join(f"g{i}" for i in range(201)) + ",,,", "genres has 201 items"),
    ],
)
def test_invisible_characters_and_over_long_values_are_refused(conn, tmp_path, row, reason):
    report = import_files(conn, videos=write(tmp_path, "v.csv", VIDEOS_HEADER + row + "\n"),
                          now=NOW)  # fmt: skip
    [(found, _)] = rejections(conn, report["videos"].import_id).values()
    assert found.startswith(reason)
    assert query(conn, "select count(*) from videos") == [(0,)]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("00000000-0000-0000-0000-000000000000,v1,like,2025-04-01T00:00:00Z",
         "user_id is the nil UUID"),
        (f"{ALICE},v1,like,0001-01-01T00:00:00Z", "created_at 0001-01-01T00:00:00Z is before"),
    ],
)  # fmt: skip
def test_nil_users_and_far_past_swipes_are_refused(conn, tmp_path, row, reason):
    videos = write(tmp_path, "v.csv", VIDEOS_HEADER + "v1,T,,,,,\n")
    decisions = write(tmp_path, "d.csv", DECISIONS_HEADER + row + "\n")
    report = import_files(conn, videos=videos, decisions=decisions, now=NOW)
    [(found, _)] = rejections(conn, report["decisions"].import_id).values()
    assert found.startswith(reason)
    assert query(conn, "select count(*) from user_video_decisions") == [(0,)]


@pytest.mark.parametrize("second", ["nope", "like"])
def test_two_imports_of_the_same_events_at_once_lose_nothing(second, db_url, conn, tmp_path):
    """The same 20,000 (user, video, instant) events in two files imported at the same moment:
    one saying like and one nope (contradicting), or both like (the same file twice). One
    file's rows are recorded; the other's are all rejected as conflicting, or all unchanged;
    nothing is lost or counted twice."""
    import threading

    from swiperec.db import connect

    users = [uuid.UUID(int=i + 1) for i in range(200)]
    videos = VIDEOS_HEADER + "".join(f"v{j},Title {j},,,,,\n" for j in range(100))
    import_files(conn, videos=write(tmp_path, "videos.csv", videos), now=NOW)

    def events(name, decision):
        rows = (f"{u},v{j},{decision},2025-05-01T00:00:{j % 60:02d}Z\n"
                for u in users for j in range(100))  # fmt: skip
        return write(tmp_path, f"{name}.csv", DECISIONS_HEADER + "".join(rows))

    files = {"first": events("first", "like"), "second": events("second", second)}
    barrier, reports = threading.Barrier(2), {}

    def run(name):
        connection = connect(db_url)
        barrier.wait()
        reports[name] = import_files(connection, decisions=files[name], now=NOW)
        connection.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    counts = {name: reports[name]["decisions"] for name in files}
    assert sorted(c.inserted for c in counts.values()) == [0, 20_000]
    [winner] = [name for name, c in counts.items() if c.inserted == 20_000]
    [loser] = set(files) - {winner}
    if second == "nope":
        assert counts[loser].rejections == {"conflicting_decision": 20_000}
        assert counts[loser].unchanged == 0
    else:
        assert counts[loser].rejected == 0 and counts[loser].unchanged == 20_000
    decision = "like" if winner == "first" else second
    assert query(conn, "select decision, count(*) from user_video_decisions group by 1") == [
        (decision, 20_000)
    ]
