"""Binary COPY encoding on rows small enough to check byte by byte."""

import numpy as np
import pytest

from swiperec.db.binary_copy import HEADER, TRAILER, Column, encode


def test_one_int4_row_is_count_length_value():
    payload = encode([Column("n", "int4", np.array([1]))])
    # field count 1 (int16), length 4 (int32), value 1 (int32), all big-endian
    assert payload == HEADER + b"\x00\x01" + b"\x00\x00\x00\x04" + b"\x00\x00\x00\x01" + TRAILER


def test_text_null_and_fixed_columns_mix():
    payload = encode([Column("t", "text", ["あ", None]), Column("n", "int2", np.array([7, 8]))])
    row1 = b"\x00\x02" + b"\x00\x00\x00\x03" + "あ".encode() + b"\x00\x00\x00\x02\x00\x07"
    row2 = b"\x00\x02" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x02\x00\x08"
    assert payload == HEADER + row1 + row2 + TRAILER


def test_null_in_fixed_width_column_is_length_minus_one_only():
    payload = encode([Column("n", "int8", np.array([5, 0]), nulls=np.array([False, True]))])
    row1 = b"\x00\x01" + b"\x00\x00\x00\x08" + (5).to_bytes(8, "big")
    row2 = b"\x00\x01" + b"\xff\xff\xff\xff"
    assert payload == HEADER + row1 + row2 + TRAILER


def test_date_and_timestamp_count_from_the_year_2000():
    payload = encode(
        [
            Column("d", "date", np.array(["2000-01-02"], dtype="datetime64[D]")),
            Column("t", "timestamptz", np.array(["2000-01-01T00:00:01"], dtype="datetime64[s]")),
        ]
    )
    body = payload[len(HEADER) : -len(TRAILER)]
    assert body == (
        b"\x00\x02"
        + b"\x00\x00\x00\x04"
        + (1).to_bytes(4, "big")  # one day
        + b"\x00\x00\x00\x08"
        + (1_000_000).to_bytes(8, "big")  # one second in microseconds
    )


def test_vector_is_dim_unused_then_big_endian_floats():
    payload = encode([Column("v", "vector", np.array([[1.0, -2.0]]))])
    body = payload[len(HEADER) : -len(TRAILER)]
    expected_value = b"\x00\x02" + b"\x00\x00" + np.array([1.0, -2.0], ">f4").tobytes()
    assert body == b"\x00\x01" + (len(expected_value)).to_bytes(4, "big") + expected_value


def test_empty_and_one_element_text_arrays():
    payload = encode([Column("a", "text[]", [[], ["x"]])])
    body = payload[len(HEADER) : -len(TRAILER)]
    empty = (0).to_bytes(4, "big") * 2 + (25).to_bytes(4, "big")  # ndim 0, no nulls, oid text
    one = (
        (1).to_bytes(4, "big")
        + (0).to_bytes(4, "big")
        + (25).to_bytes(4, "big")
        + (1).to_bytes(4, "big")
        + (1).to_bytes(4, "big")  # one dimension: size 1, lower bound 1
        + (1).to_bytes(4, "big")
        + b"x"
    )
    assert body == (
        b"\x00\x01"
        + len(empty).to_bytes(4, "big")
        + empty
        + b"\x00\x01"
        + len(one).to_bytes(4, "big")
        + one
    )


def test_chunking_does_not_change_the_payload():
    columns = [
        Column("t", "text", ["a", "bb", "ccc", None, "e"]),
        Column("n", "int8", np.arange(5)),
    ]
    whole = encode(columns)
    from swiperec.db.binary_copy import _encode_stream

    assert b"".join(_encode_stream(columns, 5, chunk_rows=2)) == whole


def test_a_set_shards_version_as_fixed_width_text_encodes_as_one_str_a_row():
    from swiperec.embeddings.store import _repeated_text

    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    for version in ("v7", "版-2", ""):
        tags = _repeated_text(version, 3)
        assert tags.dtype.kind == ("S" if version else "O")  # fixed-width unless empty
        as_str = Column("model_version", "text", [version] * 3)
        rest = [Column("video_id", "int8", np.array([1, 2, 3])), Column("e", "vector", vectors)]
        assert encode([Column("model_version", "text", tags), *rest]) == encode([as_str, *rest])


def test_fixed_width_bytes_text_must_be_exact_width():
    with pytest.raises(ValueError, match="exactly k bytes"):
        encode([Column("d", "text", np.array([b"like", b"no"]))])


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        encode([Column("a", "int4", np.arange(2)), Column("b", "int4", np.arange(3))])


def test_values_that_would_change_on_the_way_are_refused():
    with pytest.raises(ValueError, match="outside the range of int4"):
        encode([Column("n", "int4", np.array([2**31 + 5]))])
    with pytest.raises(ValueError, match="NaT"):
        encode([Column("d", "date", np.array(["NaT"], dtype="datetime64[D]"))])
    # A NaT marked as NULL is fine.
    payload = encode(
        [Column("d", "date", np.array(["NaT"], dtype="datetime64[D]"), nulls=np.array([True]))]
    )
    assert payload == HEADER + b"\x00\x01" + b"\xff\xff\xff\xff" + TRAILER
