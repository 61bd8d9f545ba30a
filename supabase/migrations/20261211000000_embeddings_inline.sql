-- swiperec: embeddings kept in their rows rather than in TOAST.
--
-- A vector(768) is 3,080 bytes. pgvector's type defaults to `external` storage, so PostgreSQL
-- moves any value that makes its row wider than ~2 KB out of the row into the table's TOAST
-- relation: every read of an embedding is then a TOAST index lookup and two chunk fetches, and
-- every write two chunk inserts with their index entries. The serving call reads ~650 of them
-- per request (the candidates, the new-release pool, the likes), the refresh writes one per
-- video, the real-time worker one per swipe. `plain` keeps the vector in its row (two rows a
-- page, the same bytes on disk as before).
--
-- Measured on 200,000 videos x 768-d, 2 cores, the same vectors written as two sets, one with
-- each storage, the serving version switched between them (A/B, 3 rounds each): the whole
-- write (inference, COPY, keys, HNSW) 112 -> 101 s; the SQL function's p50 for users with ~50
-- decisions 21.0 -> 19.3 ms, with 1,000 decisions 45.5 -> 43.8 ms.
--
-- The parents' storage reaches their partitions (those attached now and those created later
-- with PARTITION OF); the embedding writer sets it on each set's own table, since ATTACH keeps
-- a table's storage (swiperec/embeddings/store.py, begin_set). Rows written before this
-- migration stay in TOAST until they are written again: the next refresh writes a new set.

alter table public.video_embeddings alter column embedding set storage plain;
alter table public.user_embeddings alter column embedding set storage plain;
