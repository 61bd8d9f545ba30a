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
-- path on one server, reads alternating (tests/performance/bench_storage.py,
-- results/storage.json; 2 cores): the load the same within the noise (COPY 17.4 s against
-- 19.2 s, keys, HNSW and attach 169 s against 160 s); 500 vectors by primary key 0.61x; the
-- HNSW top 100 with their vectors 0.96x; the exact top 20 over every vector 0.37x (219 ms
-- against 596 ms at p50); the HNSW top 20 ids alone and a user's vector replaced 0.99x and
-- 0.98x. The heap holds the vectors now (782 MB against 17 MB of ids beside 790 MB of TOAST),
-- so with the HNSW index it needs twice the shared buffers to stay cached: in the large
-- benchmark, whose 1 GB held the index but not both, top-20 id queries took 1.2x longer.
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
