"""The HNSW build's ef_construction by the set's size (`IndexParams.for_rows`)."""

from swiperec.embeddings.store import LARGE_SET_ROWS, IndexParams


def test_ef_construction_is_32_below_the_large_set_size_and_64_from_it():
    assert IndexParams().for_rows(0).ef_construction == 32
    assert IndexParams().for_rows(LARGE_SET_ROWS - 1).ef_construction == 32
    assert IndexParams().for_rows(LARGE_SET_ROWS).ef_construction == 64
    assert IndexParams().for_rows(10 * LARGE_SET_ROWS).ef_construction == 64


def test_a_given_ef_construction_is_kept_and_the_other_settings_with_it():
    given = IndexParams(ef_construction=48, maintenance_work_mem="64MB", parallel_workers=1)
    assert given.for_rows(LARGE_SET_ROWS) == given
    chosen = IndexParams(maintenance_work_mem="64MB", parallel_workers=1).for_rows(3)
    assert chosen == IndexParams(ef_construction=32, maintenance_work_mem="64MB",
                                 parallel_workers=1)  # fmt: skip
    assert chosen.to_dict()["ef_construction"] == 32
