-- swiperec: user sets have no HNSW index.
--
-- Videos are searched by distance to a user's vector; users are only read by id, through the
-- primary key. An HNSW index on a user set was built by every refresh and kept current by every
-- real-time upsert (a user's re-embedding after a swipe took ~2.5x longer with it) and answered
-- no query. New user sets are built without one (`swiperec.embeddings.store.finish_set`); this
-- drops the index from the user sets already attached.

do $$
declare
    index_name regclass;
begin
    for index_name in
        select i.indexrelid::regclass
        from pg_index i
        join pg_inherits h on h.inhrelid = i.indrelid
        join pg_class c on c.oid = i.indexrelid
        join pg_am a on a.oid = c.relam
        where h.inhparent = 'public.user_embeddings'::regclass and a.amname = 'hnsw'
    loop
        execute format('drop index %s', index_name);
    end loop;
end
$$;
