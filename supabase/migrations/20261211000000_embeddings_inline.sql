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
-- Measured on 200,000 random unit vectors x 768-d, each storage loaded twice by the store's own
-- path on one server (tests/performance/bench_storage.py, results/storage.json; 2 cores):
-- binary COPY 16.4 s against 22.8 s (0.72x); keys, HNSW and attach the same (164 s against
-- 163 s); the exact top 20 over every vector p50 186 ms against 346 ms; 500 vectors by primary
-- key 6.2 ms against 7.3 ms; the HNSW top 100 with their vectors and the HNSW top 20 ids alone
-- 0.95x and 1.0x; a user's vector replaced 0.98x. The heap holds the vectors now (782 MB
-- against 17 MB of ids beside 790 MB of TOAST), so a query that wants ids alone reads wider
-- rows: on the large benchmark's model vectors, top-20 id queries took 1.2x longer once the
-- heap and the HNSW index no longer fitted in shared buffers together.
--
-- The parents' storage reaches their partitions (those attached now and those created later
-- with PARTITION OF); the embedding writer sets it on each set's own table, since ATTACH keeps
-- a table's storage (swiperec/embeddings/store.py, begin_set). Rows written before this
-- migration stay in TOAST until they are written again: the next refresh writes a new set.

-- SET STORAGE locks each table exclusively (briefly: it changes the catalogue alone). While
-- it waits behind a long query, serving's reads queue behind it, so it gives up after 2 s
-- rather than hold them longer; running the migration again is safe.
set local lock_timeout = '2s';
alter table public.video_embeddings alter column embedding set storage plain;
alter table public.user_embeddings alter column embedding set storage plain;
