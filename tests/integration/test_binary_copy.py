"""Binary COPY through a real PostgreSQL: every supported type, NULLs, several chunks."""

import uuid

import numpy as np
import pytest

from swiperec.db.binary_copy import Column, copy_binary

pytestmark = pytest.mark.integration


def test_every_type_round_trips_across_chunks(conn):
    n = 7
    ids = [uuid.UUID(int=i * 7919) for i in range(n)]
    null = np.array([i % 3 == 2 for i in range(n)])
    vectors = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 8
    columns = [
        Column("i8", "int8", np.arange(n) - 3),
        Column("i2", "int2", np.arange(n), nulls=null),
        Column("f8", "float8", np.linspace(-1, 1, n)),
        Column("ok", "bool", np.arange(n) % 2 == 0),
        Column("t", "text", [None if i == 4 else f"題名{i}" for i in range(n)]),
        Column("tags", "text[]", [[], ["恋愛"], ["a", "b"], None, ["x"], [], ["y"]]),
        Column("u", "uuid", np.frombuffer(b"".join(x.bytes for x in ids), np.uint8).reshape(n, 16)),
        Column("d", "date", np.array(["2024-02-29"] * n, dtype="datetime64[D]"), nulls=null),
        Column("ts", "timestamptz", np.array(["2026-01-01T09:30:00.000001"] * n, "datetime64[us]")),
        Column("v", "vector", vectors),
    ]
    with conn.cursor() as cur:
        cur.execute(
            "create temp table t (i8 int8, i2 int2, f8 float8, ok bool, t text, tags text[],"
            " u uuid, d date, ts timestamptz, v vector(3))"
        )
        assert copy_binary(cur, "t", columns, chunk_rows=3) == n
        cur.execute("select i8, i2, f8, ok, t, tags, u::text, d::text, ts::text, v from t")
        rows = cur.fetchall()
    assert [r[0] for r in rows] == list(range(-3, 4))
    assert [r[1] for r in rows] == [None if null[i] else i for i in range(n)]
    assert [r[2] for r in rows] == pytest.approx(list(np.linspace(-1, 1, n)))
    assert [r[3] for r in rows] == [i % 2 == 0 for i in range(n)]
    assert [r[4] for r in rows] == [None if i == 4 else f"題名{i}" for i in range(n)]
    assert [r[5] for r in rows] == [[], ["恋愛"], ["a", "b"], None, ["x"], [], ["y"]]
    assert [r[6] for r in rows] == [str(x) for x in ids]
    assert [r[7] for r in rows] == [None if null[i] else "2024-02-29" for i in range(n)]
    assert {r[8] for r in rows} == {"2026-01-01 09:30:00.000001+00"}
    assert np.array([r[9].to_numpy() for r in rows]).tolist() == vectors.tolist()


def test_all_fixed_width_columns_take_the_structured_path_across_chunks(conn):
    n = 5
    with conn.cursor() as cur:
        cur.execute("create temp table f (n int8, decision text, v vector(2))")
        copy_binary(
            cur,
            "f",
            [
                Column("n", "int8", np.arange(n)),
                Column("decision", "text", np.array([b"like", b"nope"] * 2 + [b"like"])),
                Column("v", "vector", np.ones((n, 2))),
            ],
            chunk_rows=2,
        )
        cur.execute("select n, decision from f order by n")
        assert cur.fetchall() == [(i, "like" if i % 2 == 0 else "nope") for i in range(n)]
