-- swiperec: serving recommendations.
--
-- `enhanced_two_tower_recommendations(user, ...)` is what the Edge Function calls: it resolves
-- the model version that serves this user, the user's query vector (their embedding; for a
-- cold start the mean of their recent likes' embeddings; with no likes, popular videos), the
-- ANN candidates from the HNSW index excluding every video the user already decided, the
-- candidates' pairwise similarities (for MMR re-ranking in the function) and the evidence for a
-- reason per item (nearest liked video, shared genre/maker/performer, the genre it is popular
-- in). Served lists are logged in `served_recommendations`.
--
-- Which version serves whom is data: `serving_routes` assigns buckets of users (a stable hash
-- of the user id, 0..9999) to a version; users outside every active route get the version
-- `serving_state` names. Experiments add routes (their arms); the function does not change.

create table if not exists public.serving_routes (
    route         text primary key,                 -- e.g. 'exp-12/treatment'
    model_version text not null references public.model_versions,
    bucket_from   integer not null,                 -- users whose bucket is in [from, to)
    bucket_to     integer not null,
    active        boolean not null default true,
    created_at    timestamptz not null default now(),
    check (0 <= bucket_from and bucket_from < bucket_to and bucket_to <= 10000)
);

comment on table public.serving_routes is
    'Buckets of users (swiperec_private.user_bucket: 0..9999) served by a given model version, '
    'e.g. an experiment arm. Users outside every active route get serving_state''s version.';

create or replace function swiperec_private.user_bucket(p_user uuid)
returns integer
language sql immutable parallel safe
as $$ select ((hashtextextended(p_user::text, 0) & 9223372036854775807) % 10000)::integer $$;

create or replace function public.serving_version_for(p_user uuid)
returns text
language sql stable
as $$
    select coalesce(
        (select r.model_version from public.serving_routes r
         where r.active
           and swiperec_private.user_bucket(p_user) >= r.bucket_from
           and swiperec_private.user_bucket(p_user) < r.bucket_to
         order by r.bucket_to - r.bucket_from, r.route
         limit 1),
        (select s.model_version from public.serving_state s))
$$;

-- A version a route serves is in use: retention never drops its embedding sets.
create or replace view swiperec_private.versions_in_use as
    select model_version from public.serving_state
    union
    select model_version from public.serving_routes where active;

create table if not exists public.served_recommendations (
    id            bigint generated always as identity primary key,
    request_id    uuid not null,
    user_id       uuid not null,
    video_id      bigint not null,
    position      smallint not null,                -- 1-based, as shown
    score         real not null,
    model_version text not null,
    source        text not null,                    -- embedding | recent_likes | popular
    reason        text not null,
    created_at    timestamptz not null default now()
);

create index if not exists served_recommendations_user_time
    on public.served_recommendations (user_id, created_at);
create index if not exists served_recommendations_version_time
    on public.served_recommendations (model_version, created_at);

comment on table public.served_recommendations is
    'Every recommendation served: one row per item of a response. Monitoring and A/B '
    'analysis read it.';

-- Popularity: likes (swipes and reviews >= 4) per video, the popular fallback's order. A
-- materialized view, refreshed by each embedding refresh (swiperec.embeddings.writer): the
-- fallback reads it per request, and counting every like per request would not scale.
create materialized view if not exists swiperec_private.video_popularity as
    select video_id, count(*)::bigint as likes
    from (
        select video_id from public.user_video_latest_decisions where decision = 'like'
        union all
        select video_id from public.video_reviews where rating >= 4
    ) liked
    group by video_id
with data;

create unique index if not exists video_popularity_video
    on swiperec_private.video_popularity (video_id);
create index if not exists video_popularity_likes
    on swiperec_private.video_popularity (likes desc, video_id);

create or replace function public.enhanced_two_tower_recommendations(
    p_user_id    uuid,
    p_candidates integer default 100,
    p_genres     text[] default null,
    p_makers     text[] default null,
    p_exclude    bigint[] default '{}',
    p_ef_search  integer default 100
)
returns table (
    video_id         bigint,
    title            text,
    genres           text[],
    maker            text,
    score            real,        -- cosine similarity to the query vector; popularity share
    rank             integer,     -- 1 = nearest
    similarities     real[],      -- cosine to every candidate, in rank order (for MMR)
    liked_video_id   bigint,      -- the user's liked video nearest to this one
    liked_title      text,
    liked_similarity real,
    shared_genre     text,        -- the candidate's genre the user liked most, if any
    shared_maker     text,
    shared_performer text,
    model_version    text,
    source           text         -- embedding | recent_likes | popular
)
language plpgsql stable
set hnsw.iterative_scan = relaxed_order
set hnsw.ef_search = 100
set plan_cache_mode = force_custom_plan  -- plans for this user's case (embedding, likes, none)
as $$
#variable_conflict use_column
declare
    v_version text;
    v_query   vector;
    v_source  text := 'embedding';
begin
    if p_user_id is null then
        raise exception 'p_user_id is required' using errcode = '22004';
    end if;
    if p_candidates is null or p_candidates < 1 or p_candidates > 1000 then
        raise exception 'p_candidates must be 1..1000, got %', p_candidates using errcode = '22023';
    end if;
    v_version := public.serving_version_for(p_user_id);
    if v_version is null then
        raise exception 'no model version serves yet' using errcode = 'P0002';
    end if;
    if not exists (select 1 from public.embedding_sets s where s.model_version = v_version
                   and s.kind = 'video' and s.state = 'ready') then
        raise exception 'model version % has no ready video embeddings', v_version
            using errcode = 'P0002';
    end if;
    -- The function's own SET clauses scope this to the call.
    perform set_config('hnsw.ef_search', greatest(p_ef_search, p_candidates, 40)::text, true);

    select e.embedding into v_query
    from public.user_embeddings e
    where e.model_version = v_version and e.user_id = p_user_id;

    if v_query is null then  -- cold start: the mean of the recent likes' embeddings
        v_source := 'recent_likes';
        select avg(e.embedding) into v_query
        from (select d.video_id from public.user_video_latest_decisions d
              where d.user_id = p_user_id and d.decision = 'like'
              order by d.created_at desc limit 20) recent
        join public.video_embeddings e
          on e.model_version = v_version and e.video_id = recent.video_id;
    end if;

    -- Candidates and likes carry their vectors as halfvec, once: the similarity matrix and the
    -- nearest-like search compare each of them N times, and pgvector's halfvec distances are
    -- ~10x faster than vector's here (SIMD), at an error of ~3e-5 in cosine.
    return query
    with candidates as materialized (
        select c.video_id, c.embedding::halfvec as embedding, c.score
        from (
            -- ANN over the HNSW index, ordered by the distance expression itself; iterative
            -- scan keeps going until `p_candidates` rows pass the exclusion filters.
            select e.video_id, e.embedding, (1 - (e.embedding <=> v_query))::real as score
            from public.video_embeddings e
            where v_query is not null
              and e.model_version = v_version
              and not exists (select 1 from public.user_video_decisions d
                              where d.user_id = p_user_id and d.video_id = e.video_id)
              and e.video_id <> all(coalesce(p_exclude, '{}'))
              and (p_genres is null and p_makers is null
                   or exists (select 1 from public.videos f where f.id = e.video_id
                              and (p_genres is null or f.genres && p_genres)
                              and (p_makers is null or f.maker = any(p_makers))))
            order by e.embedding <=> v_query
            limit p_candidates
        ) c
        union all
        -- No embedding and no likes: the most liked videos the user has not decided.
        select p.video_id, e.embedding::halfvec,
               (p.likes::real / greatest(max(p.likes) over (), 1))::real as score
        from (
            select pop.video_id, pop.likes
            from swiperec_private.video_popularity pop
            join public.videos f on f.id = pop.video_id
            where v_query is null
              and not exists (select 1 from public.user_video_decisions d
                              where d.user_id = p_user_id and d.video_id = pop.video_id)
              and pop.video_id <> all(coalesce(p_exclude, '{}'))
              and (p_genres is null or f.genres && p_genres)
              and (p_makers is null or f.maker = any(p_makers))
            order by pop.likes desc, pop.video_id
            limit p_candidates
        ) p
        join public.video_embeddings e on e.model_version = v_version and e.video_id = p.video_id
    ),
    ranked as (
        select c.*, (row_number() over (order by c.score desc, c.video_id))::integer as rank
        from candidates c
    ),
    likes as materialized (
        select l.video_id, f.title, f.genres, f.maker, f.performers,
               e.embedding::halfvec as embedding
        from (select d.video_id, d.created_at from public.user_video_latest_decisions d
              where d.user_id = p_user_id and d.decision = 'like'
              order by d.created_at desc limit 50) l
        join public.videos f on f.id = l.video_id
        join public.video_embeddings e on e.model_version = v_version and e.video_id = l.video_id
    ),
    liked_genres as (
        select g, count(*) as n from likes, unnest(likes.genres) g group by g
    ),
    liked_makers as (
        select likes.maker as m, count(*) as n from likes where likes.maker is not null
        group by likes.maker
    ),
    liked_performers as (
        select p, count(*) as n from likes, unnest(likes.performers) p group by p
    )
    select r.video_id, f.title, f.genres, f.maker, r.score, r.rank,
           (select array_agg((1 - (r.embedding <=> o.embedding))::real order by o.rank)
            from ranked o),
           nl.video_id, nl.title, nl.similarity,
           (select g from unnest(f.genres) g join liked_genres lg using (g)
            order by lg.n desc, g limit 1),
           (select lm.m from liked_makers lm where lm.m = f.maker),
           (select p from unnest(f.performers) p join liked_performers lp using (p)
            order by lp.n desc, p limit 1),
           v_version, case when v_query is null then 'popular' else v_source end
    from ranked r
    -- One primary-key lookup per candidate: `limit 1` keeps the planner from turning this into
    -- a hash join over the whole catalogue when it misjudges how many candidates there are.
    cross join lateral (select v.title, v.genres, v.maker, v.performers from public.videos v
                        where v.id = r.video_id limit 1) f
    left join lateral (
        select lk.video_id, lk.title, (1 - (lk.embedding <=> r.embedding))::real as similarity
        from likes lk order by lk.embedding <=> r.embedding limit 1
    ) nl on true
    order by r.rank;
end
$$;

comment on function public.enhanced_two_tower_recommendations is
    'Candidates for the Edge Function of the same name: ANN top-N (decided videos excluded), '
    'pairwise similarities for MMR, evidence for reasons. Service role only: the function '
    'takes the user id from a verified JWT.';

alter table public.serving_routes enable row level security;
alter table public.served_recommendations enable row level security;
revoke all on public.serving_routes, public.served_recommendations from anon, authenticated;
revoke all on function public.enhanced_two_tower_recommendations(uuid, integer, text[], text[],
    bigint[], integer) from public, anon, authenticated;
revoke all on function public.serving_version_for(uuid) from public, anon, authenticated;
