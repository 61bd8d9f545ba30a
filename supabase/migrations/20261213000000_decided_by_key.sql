-- swiperec: the serving call reads the videos of the user's decisions by primary key.
--
-- The match profile (`decided`) joins each of the user's decisions to its video's maker,
-- genres and performers. Once ANALYZE has seen users with ~1,000 decisions, the planner
-- expects many rows per user and hashes the whole catalogue for the join (a sequential scan
-- of public.videos per request) rather than probing its primary key once per decision: on
-- 32,304 videos, 12.5-21 ms of a 39-56 ms call for such a user (`auto_explain`, two runs),
-- against ~4 ms for the 1,000 lookups. `limit 1` in a lateral lookup keeps the probe
-- whatever the statistics say, as the candidates' lookups below already do.
--
-- The function is otherwise 20261210000000_serving_similarity_triangle.sql's, with
-- `set timezone = 'UTC'` repeated among its settings (20261212000000_days_in_utc.sql): a
-- `create or replace` replaces them all.

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
    score            real,        -- the ranking stage's score; popularity share
    rank             integer,     -- 1 = best score
    similarities     real[],      -- cosine to each candidate ranked after it, in rank order
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
set timezone = 'UTC'  -- days counted in UTC (20261212000000_days_in_utc.sql)
as $$
#variable_conflict use_column
declare
    -- Exploration: new releases (released in the last c_new_release_days days) whose own
    -- evidence is thin. Of the c_new_release_pool most recent, the c_new_release_candidates
    -- nearest join the candidates and their like logit gets the video set's
    -- new_release_bonus (optimism for the uncertain), so a page shows some. The evaluator
    -- serves the same way (swiperec/evaluation/evaluate.py, NEW_RELEASE).
    c_new_release_days       constant integer := 60;
    c_new_release_pool       constant integer := 500;
    c_new_release_candidates constant integer := 20;
    v_new_release_bonus real;
    v_version text;
    v_query   vector;
    v_source  text := 'embedding';
    v_skip    bigint[];  -- the user's decided videos and p_exclude: never candidates
    -- the set's weights of the ranking features (RANKING_FEATURE_NAMES order: the 6 match
    -- features, then the video's evidence when there are 8); null: none
    v_match   real[];
    v_half_life_s double precision;
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
    select s.match_weights, s.match_half_life_days * 86400,
           coalesce(s.new_release_bonus, 1.0)
      into v_match, v_half_life_s, v_new_release_bonus
    from public.embedding_sets s
    where s.model_version = v_version and s.kind = 'video' and s.state = 'ready';
    if not found then
        raise exception 'model version % has no ready video embeddings', v_version
            using errcode = 'P0002';
    end if;
    -- The function's own SET clauses scope this to the call.
    perform set_config('hnsw.ef_search', greatest(p_ef_search, p_candidates, 40)::text, true);

    -- Every video the user decided, read once (an index-only scan of the user's rows), plus
    -- p_exclude: the scans below test `<> all(v_skip)`, a hashed lookup per visited row,
    -- instead of an index probe into user_video_decisions per row (each probe by video_id
    -- visits the heap rows of every user who decided that video; the HNSW scan of a user with
    -- 1,000 decisions among their nearest passes ~1,000 rows).
    select coalesce(array_agg(d.video_id), '{}') || coalesce(p_exclude, '{}') into v_skip
    from public.user_video_decisions d
    where d.user_id = p_user_id;

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

    -- Candidates and likes carry their vectors as halfvec, once: the similarities' upper
    -- triangle and the nearest-like search compare each of them many times, and pgvector's
    -- halfvec distances are ~10x faster than vector's here (SIMD), at an error of ~3e-5 in
    -- cosine.
    return query
    with nearest as materialized (
        -- ANN over the HNSW index, ordered by the distance expression itself; iterative
        -- scan keeps going until enough rows pass the exclusion filters. The row's vector and
        -- ranking terms come with it (one heap fetch per row, which the scan does anyway),
        -- rather than from a second primary-key lookup per candidate.
        select e.video_id, e.embedding, e.rank_bias, e.rank_scale
        from public.video_embeddings e
        where v_query is not null
          and e.model_version = v_version
          and e.video_id <> all(v_skip)
          and (p_genres is null and p_makers is null
               or exists (select 1 from public.videos f where f.id = e.video_id
                          and (p_genres is null or f.genres && p_genres)
                          and (p_makers is null or f.maker = any(p_makers))))
        order by e.embedding <=> v_query
        limit p_candidates
    ),
    explored as materialized (
        -- Exploration, exact over a bounded pool: the c_new_release_pool most recent releases
        -- (the release-date index, newest first), the c_new_release_candidates nearest of them
        -- by cosine. A filtered HNSW scan would pass ~50 catalogue rows for each new release.
        select e.video_id, e.embedding, e.rank_bias, e.rank_scale
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
        cross join lateral (select e.video_id, e.embedding, e.rank_bias, e.rank_scale
                            from public.video_embeddings e
                            where e.model_version = v_version and e.video_id = pool.id
                            limit 1) e
        where e.rank_scale is not null
          and e.video_id <> all(v_skip)
        -- `+ 0`: an expression no index serves, so the pool is compared exactly rather than
        -- walked through the HNSW graph with the pool as a filter
        order by (e.embedding <=> v_query) + 0
        limit c_new_release_candidates
    ),
    decided as materialized (
        -- Every decision of the user with its recency weight, 2^((t - newest) / half-life):
        -- UserHistory's weights up to one factor, which the shares cancel. A decision over
        -- 1,000 half-lives older than the newest weighs 2^-1000, nothing beside the newest's 1,
        -- as it weighs nothing there (power() would raise on the underflow instead).
        select d.decision = 'like' as liked, f.maker, f.genres, f.performers,
               power(2::double precision, greatest(
                     extract(epoch from d.created_at - max(d.created_at) over ())
                     / v_half_life_s, -1000)) as w
        from public.user_video_decisions d
        -- one primary-key lookup per decision: `limit 1` keeps the planner from a hash join
        -- over the whole catalogue once its statistics see users with many decisions
        cross join lateral (select f.maker, f.genres, f.performers from public.videos f
                            where f.id = d.video_id limit 1) f
        where v_match is not null and v_query is not null and d.user_id = p_user_id
    ),
    profile as materialized (
        -- The user's shares per maker, genre and performer, likes and nopes apart: each
        -- name's weight over the total of its kind (UserHistory's `features` lists). NULL and
        -- '' names are none, as the catalogue reads them. `key`: kind and name in one value
        -- (no kind holds a '/', so no two kinds' keys can meet), which `matched` joins on.
        select x.kind || '/' || x.name as key, x.liked,
               sum(x.w) / sum(sum(x.w)) over (partition by x.kind, x.liked) as share
        from (select 'maker' as kind, h.maker as name, h.liked, h.w
              from decided h where h.maker is not null and h.maker <> ''
              union all
              select 'genre', g, h.liked, h.w from decided h, unnest(h.genres) g
              where g <> ''
              union all
              select 'performer', p, h.liked, h.w from decided h, unnest(h.performers) p
              where p <> '') x
        group by x.kind, x.name, x.liked
    ),
    retrieved as materialized (
        -- The union of both scans (a new release among the nearest counts once), with the
        -- video's release, maker, genres and performers, and its swipes as of this request
        -- (one primary-key lookup per candidate; no row: none yet).
        select r.*, f.release_date, f.maker, f.genres, f.performers,
               coalesce(sc.likes, 0) as likes, coalesce(sc.nopes, 0) as nopes
        from (select * from nearest
              union all
              select x.* from explored x
              where not exists (select 1 from nearest n where n.video_id = x.video_id)) r
        join public.videos f on f.id = r.video_id
        -- `limit 1`: one primary-key lookup per candidate; left to itself the planner hashed
        -- the candidates and scanned every row of video_swipe_counts, which grows with the
        -- catalogue the users have swiped (23,682 rows: ~2 ms of the call at 200k videos)
        left join lateral (select sc.likes, sc.nopes
                           from swiperec_private.video_swipe_counts sc
                           where sc.video_id = r.video_id limit 1) sc on true
    ),
    matched as (
        -- w . match, one join for all candidates: each of a candidate's makers, genres and
        -- performers the user decided adds its share times the weight of its feature (1-2
        -- maker, 3-4 genres, 5-6 performers; likes, then nopes), divided by how many of that
        -- kind the candidate has (the mean share). One equality on one key: joined on kind and
        -- name apart, the planner merged on the kind alone and filtered ~75,000 pairs by name
        -- for a user with 1,000 decisions (~10 ms); on the key it hashes the profile once.
        select o.video_id,
               sum(pr.share * v_match[case o.kind when 'maker' then 1
                                                  when 'genre' then 3 else 5 end
                                      + case when pr.liked then 0 else 1 end] / o.n) as match
        from (select c.video_id, 'maker' as kind, c.maker as name, 1 as n
              from retrieved c where c.maker is not null and c.maker <> ''
              union all
              select c.video_id, 'genre', g, cardinality(array_remove(array_remove(
                         c.genres, null), ''))
              from retrieved c, unnest(c.genres) g where g <> ''
              union all
              select c.video_id, 'performer', p, cardinality(array_remove(array_remove(
                         c.performers, null), ''))
              from retrieved c, unnest(c.performers) p where p <> '') o
        join profile pr on pr.key = o.kind || '/' || o.name
        group by o.video_id
    ),
    candidates as materialized (
        -- The ranking stage: sigmoid(scale * cosine + bias + w . match + w7 * like log-odds
        -- + w8 * swipes) of the video's ranking terms, its match with the user's history and its
        -- own swipe evidence (w8 with the model's exposure prior), plus the set's exploration
        -- bonus for a new release (a set written without ranking terms ranks by the cosine; one
        -- with 6 weights has no evidence terms: v_match[7] and [8] are null).
        select c.video_id, c.embedding::halfvec as embedding,
               (case when c.rank_scale is null then c.cosine
                     else 1 / (1 + exp(-least(greatest(
                         c.rank_scale * c.cosine + coalesce(c.rank_bias, 0) + c.match
                         + c.evidence
                         + case when c.new_release then v_new_release_bonus else 0 end,
                         -50), 50)))
                end)::real as score
        from (
            select r.video_id, r.embedding, (1 - (r.embedding <=> v_query))::real as cosine,
                   r.rank_bias, r.rank_scale,
                   coalesce(r.release_date > current_date - c_new_release_days
                            and r.release_date <= current_date, false) as new_release,
                   coalesce(m.match, 0) as match,
                   coalesce(v_match[7], 0) * ln((r.likes + 1)::double precision / (r.nopes + 1))
                   + coalesce(v_match[8], 0) * ln((1 + r.likes + r.nopes)::double precision)
                       as evidence
            from retrieved r
            left join matched m on m.video_id = r.video_id
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
              and pop.video_id <> all(v_skip)
              and (p_genres is null or f.genres && p_genres)
              and (p_makers is null or f.maker = any(p_makers))
            order by pop.likes desc, pop.video_id
            limit p_candidates
        ) p
        join public.video_embeddings e on e.model_version = v_version and e.video_id = p.video_id
    ),
    ranked as materialized (
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
           -- the cosines to the candidates ranked after this one, the upper triangle of the
           -- symmetric matrix: half the distances and half the bytes of the whole (the last
           -- row's is empty). The cosines first (`offset 0` keeps the subquery), so the sort by
           -- rank carries (rank, cosine) pairs rather than the candidates with their vectors.
           coalesce((select array_agg(x.similarity order by x.rank)
                     from (select o.rank, (1 - (r.embedding <=> o.embedding))::real as similarity
                           from ranked o where o.rank > r.rank offset 0) x), '{}'),
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
