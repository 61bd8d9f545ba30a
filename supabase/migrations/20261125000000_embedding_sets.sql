-- swiperec: embedding sets and the serving switch.
--
-- Each model version's video and user embeddings are a set: loaded into a standalone table with
-- binary COPY (no index yet), indexed (primary key, HNSW cosine) and analysed, then attached as
-- the version's partition of video_embeddings / user_embeddings. Which version serves is one
-- row (`serving_state`), switched in one short transaction; readers see the old version or the
-- new one, never a mix. Old sets are dropped by a retention policy that keeps every version
-- still in use (`swiperec_private.versions_in_use`: the serving one today; experiment arms
-- extend that view when they arrive).

create table if not exists public.embedding_sets (
    model_version text not null,
    kind          text not null check (kind in ('video', 'user')),
    state         text not null check (state in ('loading', 'ready')),
    table_name    text not null,          -- swiperec_private.<kind>_embeddings_<hash>
    dimension     integer not null,
    row_count     bigint,
    index_params  jsonb,
    created_at    timestamptz not null default now(),
    ready_at      timestamptz,
    primary key (model_version, kind)
);

comment on table public.embedding_sets is
    'One row per model version and kind: loading while shards are copied in, ready once '
    'indexed and attached as a partition. A version can serve when both its sets are ready.';

-- Shards copied into a loading set: a shard is recorded in the transaction that copies it,
-- so a retried shard (a worker restarted after its commit) is skipped, never loaded twice.
create table if not exists public.embedding_set_shards (
    model_version text not null,
    kind          text not null,
    shard         text not null,
    row_count     bigint not null,
    loaded_at     timestamptz not null default now(),
    primary key (model_version, kind, shard),
    foreign key (model_version, kind) references public.embedding_sets on delete cascade
);

create table if not exists public.serving_state (
    singleton     boolean primary key default true check (singleton),
    model_version text not null,
    activated_at  timestamptz not null default now()
);

comment on table public.serving_state is
    'The model version whose embeddings serve: one row, switched atomically by activation.';

create table if not exists public.embedding_activations (
    id               bigint generated always as identity primary key,
    model_version    text not null,
    previous_version text,
    activated_at     timestamptz not null default now()
);

create or replace view swiperec_private.versions_in_use as
    select model_version from public.serving_state;

alter table public.embedding_sets enable row level security;
alter table public.embedding_set_shards enable row level security;
alter table public.serving_state enable row level security;
alter table public.embedding_activations enable row level security;

-- Pipeline bookkeeping: nothing here is for the app's roles (Supabase grants them every new
-- table in `public` by default).
revoke all on public.embedding_sets, public.embedding_set_shards, public.serving_state,
    public.embedding_activations from anon, authenticated;
