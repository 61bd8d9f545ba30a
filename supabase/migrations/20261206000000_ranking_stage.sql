-- swiperec: the ranking stage.
--
-- Retrieval stays the cosine top-N from the HNSW index; the candidates are then ranked by what
-- a cosine of two unit vectors cannot hold: each video's learned ranking terms, stored beside
-- its embedding in every version's set (`rank_bias`, `rank_scale`: the model's
-- `VideoRanking`), giving the like score sigmoid(rank_scale * cosine + rank_bias) that the
-- training's like/nope loss fitted (the user's own bias left out: it moves all of a user's
-- candidates alike). The score is MMR's relevance in the Edge Function. Sets written before
-- the ranking terms existed have them null and rank by the cosine, as before.
--
-- Exploration: a video released in the last 60 days has little evidence of its own (no id
-- embedding, a bias from its content alone), and a cosine ranking almost never shows one. Of
-- the 500 most recent new releases, the 20 nearest join the candidates and their logit gets a
-- bonus of 1.0, so pages carry some; what they earn in swipes then becomes their evidence at the next training.
--
-- Only the candidates change in `enhanced_two_tower_recommendations`; its signature, the
-- popular fallback and the reasons' evidence stay as they were.

alter table public.video_embeddings
    add column if not exists rank_bias real,
    add column if not exists rank_scale real;

-- A video set still loading (a standalone table, not yet a partition) gets them too, or it
-- could never be attached.
do $$
declare
    loading record;
begin
    for loading in select table_name from public.embedding_sets
                   where kind = 'video' and state = 'loading' loop
        if to_regclass(loading.table_name) is not null then
            execute format('alter table %s add column if not exists rank_bias real, '
                           'add column if not exists rank_scale real', loading.table_name);
        end if;
    end loop;
end
$$;

comment on column public.video_embeddings.rank_bias is
    'The ranking stage''s bias of the video (its general appeal, in logits); null: none.';
comment on column public.video_embeddings.rank_scale is
    'The ranking stage''s scale of the cosine for the video (> 0); null: rank by the cosine.';

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
    score            real,        -- the ranking stage's like score; popularity share
    rank             integer,     -- 1 = best score
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
    -- Exploration: new releases (released in the last c_new_release_days days) whose own
    -- evidence is thin. Of the c_new_release_pool most recent, the c_new_release_candidates
    -- nearest join the candidates and their like logit gets c_new_release_bonus (optimism for
    -- the uncertain), so a page shows some. The evaluator serves the same way
    -- (swiperec/evaluation/evaluate.py, NEW_RELEASE).
    c_new_release_days       constant integer := 60;
    c_new_release_pool       constant integer := 500;
    c_new_release_candidates constant integer := 20;
    c_new_release_bonus      constant real := 1.0;
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
    with retrieved as materialized (
        -- ANN over the HNSW index, ordered by the distance expression itself; iterative
        -- scan keeps going until enough rows pass the exclusion filters. Two scans: the
        -- `p_candidates` nearest, and the nearest new releases (exploration, below).
        (select e.video_id
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
         limit p_candidates)
        union
        -- Exact, over a bounded pool: the c_new_release_pool most recent releases (the
        -- release-date index, newest first), the nearest of them by cosine. A filtered HNSW
        -- scan would pass ~50 catalogue rows for each new release it finds.
        (select e.video_id
         from (select f.id
               from public.videos f
               where v_query is not null
                 and f.release_date > current_date - c_new_release_days
                 and f.release_date <= current_date
                 and (p_genres is null or f.genres && p_genres)
                 and (p_makers is null or f.maker = any(p_makers))
               order by f.release_date desc, f.id desc
               limit c_new_release_pool) pool
         -- one primary-key lookup per pooled video (`limit 1` keeps the planner from a hash
         -- join over the whole set)
         cross join lateral (select e.video_id, e.embedding, e.rank_scale
                             from public.video_embeddings e
                             where e.model_version = v_version and e.video_id = pool.id
                             limit 1) e
         where e.rank_scale is not null
           and not exists (select 1 from public.user_video_decisions d
                           where d.user_id = p_user_id and d.video_id = e.video_id)
           and e.video_id <> all(coalesce(p_exclude, '{}'))
         -- `+ 0`: an expression no index serves, so the pool is compared exactly rather than
         -- walked through the HNSW graph with the pool as a filter
         order by (e.embedding <=> v_query) + 0
         limit c_new_release_candidates)
    ),
    candidates as materialized (
        -- The ranking stage: the like score sigmoid(scale * cosine + bias) of the video's
        -- ranking terms, plus the exploration bonus for a new release (a set written without
        -- ranking terms ranks by the cosine).
        select c.video_id, c.embedding::halfvec as embedding,
               (case when c.rank_scale is null then c.cosine
                     else 1 / (1 + exp(-least(greatest(
                         c.rank_scale * c.cosine + coalesce(c.rank_bias, 0)
                         + case when c.new_release then c_new_release_bonus else 0 end,
                         -50), 50)))
                end)::real as score
        from (
            select e.video_id, e.embedding, (1 - (e.embedding <=> v_query))::real as cosine,
                   e.rank_bias, e.rank_scale,
                   coalesce(f.release_date > current_date - c_new_release_days
                            and f.release_date <= current_date, false) as new_release
            from retrieved r
            join public.video_embeddings e
              on e.model_version = v_version and e.video_id = r.video_id
            join public.videos f on f.id = r.video_id
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
    'Candidates for the Edge Function of the same name: ANN top-N by cosine (decided videos '
    'excluded), ranked by the videos'' ranking terms, pairwise similarities for MMR, evidence '
    'for reasons. Service role only: the function takes the user id from a verified JWT.';
