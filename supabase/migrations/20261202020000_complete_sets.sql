-- swiperec: a set is ready only when it is complete.
--
-- The writer fixes how many shards a set has before its load starts (`expected_shards`);
-- finishing a set checks that exactly those shards are recorded and that the table holds the
-- rows they recorded, so a set that lost or gained shards (two writers, a retried load) is
-- never marked ready. Sets recorded before this column existed have none (NULL): they were
-- complete when they became ready.

alter table public.embedding_sets
    add column if not exists expected_shards integer check (expected_shards >= 0);

alter table public.embedding_sets
    drop constraint if exists embedding_sets_ready_is_complete;
alter table public.embedding_sets
    add constraint embedding_sets_ready_is_complete
    check (state <> 'ready' or row_count is not null) not valid;

-- Retiring: a set retention has taken out of use, whose table is being detached and dropped.
-- Nothing serves from it or may promote it; the next retirement finishes one a killed
-- retirement left in this state.
alter table public.embedding_sets drop constraint if exists embedding_sets_state_check;
alter table public.embedding_sets
    add constraint embedding_sets_state_check check (state in ('loading', 'ready', 'retiring'));
