-- swiperec: each video's own swipe evidence in the ranking stage.
--
-- A tower holds what a video is like as of training; how the app's users have answered it
-- since is evidence that keeps arriving, and no vector written before it can hold it. A model
-- trained with `video_evidence` weighs two more ranking features per candidate, after the six
-- match features (`RANKING_FEATURE_NAMES` in swiperec/features/video_evidence.py, computed there
-- for training as of each example): 7 `video_like_logodds` = ln((likes + 1) / (nopes + 1)) and
-- 8 `video_swipes` = ln(1 + likes + nopes), over real users' swipes (one vote per user and
-- video: the user's latest swipe on it in user_video_decisions, by created_at, then id; a
-- repeat swipe replaces the user's earlier vote rather than adding one, so one account cannot
-- move a video's counts by more than one; reviews are left out). Its video set's
-- `match_weights` then has 8 weights, and the function adds `w7 * logodds + w8 * swipes` to each
-- candidate's like logit. Sets with 6 weights, and sets without, rank as before.
--
-- Training reads the counts as of each example; serving must read them as of the request, so
-- they are kept live rather than refreshed like `video_popularity`: `video_swipe_counts` holds
-- each video's likes and nopes, changed in the same transaction as the swipes themselves by
-- statement-level triggers over transition tables on user_video_decisions (one pass per
-- statement, so a bulk COPY or an import pays once, not per row). Each statement changes a
-- video's counts by the latest decisions of the (user, video) pairs it touched after it, minus
-- theirs before it: inserts (a backfilled swipe older than the user's latest changes nothing),
-- deletes (also those cascaded from a deleted video; deleting a user's latest swipe brings back
-- their earlier one), updates, COPY; a truncate empties it. A video whose counts fall to zero
-- keeps its row at 0/0. Serving reads one row per candidate by its primary key. Other users'
-- swipes thus move a user's scores, in aggregate only (counts per video, not who swiped), as
-- the popular fallback's likes already do.
--
-- Cost (50,000 videos x 768-d, HNSW, 300,000 swipes, a set with 8 weights): the ~120 lookups
-- take ~0.4 ms of a ~30-40 ms call (EXPLAIN ANALYZE through auto_explain: 119 index scans, 357
-- buffer hits), within the noise of timing the call against the previous function.
-- The triggers (2 cores, 500,000 swipes of 5,000 users on 30,000 videos, 5% repeated pairs):
-- a COPY of all of them with the table's keys and indexes dropped, as the synthetic load does,
-- takes ~1.9 s, ~1.6 s of it in the trigger (hash joins and a sort over the statement's pairs);
-- an app swipe, a single-row insert, ~0.7 ms instead of ~0.2 ms (its pairs' rows by the unique
-- key's index; the counting query is planned per statement). Deleting 1,000 videos with ~6,000
-- swipes fires the delete trigger once, not once per video.

create table if not exists swiperec_private.video_swipe_counts (
    -- No foreign key to public.videos: the loads truncate the catalogue and the swipes in one
    -- command, which a reference from here would refuse; a deleted video's swipes are deleted
    -- by their own cascade, and with them its counts (its row stays, at 0/0).
    video_id bigint primary key,
    likes    bigint not null,
    nopes    bigint not null
)
-- Every swipe updates its video's row: room in each page keeps those updates HOT (no index
-- entry per swipe).
with (fillfactor = 80);

comment on table swiperec_private.video_swipe_counts is
    'Every video''s real-user votes by decision: one per user who swiped it, their latest swipe '
    '(a repeat swipe replaces the earlier vote), kept by triggers in the transaction of the '
    'swipes; no row, or 0/0: none. The ranking stage''s video_like_logodds and video_swipes.';

-- Adds per-video changes to the counts: one upsert, in video order, so two statements of
-- concurrent transactions that change the same videos lock their rows in the same order: one
-- waits for the other instead of deadlocking. Rows left at zero stay (at 0/0). A count below
-- zero would mean a vote was taken back that was never counted (the triggers were bypassed):
-- refused, rather than served as the logarithm of nothing; `recount_video_swipes()` repairs.
-- (Not a CHECK on the table: an upsert checks the row it proposes, the change itself, before it
-- finds the row to add it to.)
create or replace function swiperec_private.add_video_swipes(
    p_video_ids bigint[], p_likes bigint[], p_nopes bigint[])
returns void
language plpgsql set search_path = ''
as $$
declare
    v_below bigint[];
begin
    with changed as (
        insert into swiperec_private.video_swipe_counts as c (video_id, likes, nopes)
        select d.video_id, d.likes, d.nopes
        from unnest(p_video_ids, p_likes, p_nopes) d (video_id, likes, nopes)
        where d.likes <> 0 or d.nopes <> 0
        order by d.video_id
        on conflict (video_id) do update
            set likes = c.likes + excluded.likes, nopes = c.nopes + excluded.nopes
        returning c.video_id, c.likes, c.nopes
    )
    select array_agg(changed.video_id) into v_below
    from changed
    where changed.likes < 0 or changed.nopes < 0;
    if v_below is not null then
        raise exception 'swipe counts below zero for videos %', v_below
            using errcode = 'check_violation',
                  hint = 'Recount them: select swiperec_private.recount_video_swipes()';
    end if;
end
$$;

-- Locks the counts rows of the given videos until the transaction ends, creating those missing
-- at 0/0: both in video order, so that concurrent statements wait for one another rather than
-- deadlock. (A transaction keeps its rows locked until it ends: two that each swipe over
-- several statements, in opposite orders, can still deadlock, and PostgreSQL aborts one; the
-- app's swipes are one statement each.) The row of a video is the lock of all its swipes'
-- counting: one row per video rather than an advisory lock per (user, video), which a bulk
-- COPY of millions of swipes would need millions of.
create or replace function swiperec_private.lock_video_swipe_counts(p_video_ids bigint[])
returns void
language plpgsql set search_path = ''
as $$
begin
    insert into swiperec_private.video_swipe_counts (video_id, likes, nopes)
    select v.video_id, 0, 0
    from (select distinct u.video_id from unnest(p_video_ids) u (video_id)) v
    order by v.video_id
    on conflict (video_id) do nothing;
    perform 1
    from swiperec_private.video_swipe_counts c
    where c.video_id = any(p_video_ids)
    order by c.video_id
    for update;
end
$$;

-- One function for the three events: the statement's new rows (insert, update) and old rows
-- (delete, update), a relation with no rows in place of a transition table the event has none
-- of (a function cannot name a transition table its trigger does not declare, hence the
-- query's text is completed per event, and planned per statement: a swipe wants index lookups,
-- a COPY of millions hash joins). Runs as its owner (security definer): an app user's swipe,
-- which row-level security admits to user_video_decisions only, still counts here.
--
-- Per video, the change is the latest decisions of the statement's (user, video) pairs after
-- the statement (their rows in the table now) minus those before it (their rows now but the
-- new ones, and the old ones). Two transactions that swipe the same pair at once must not both
-- read the same "before": each first locks its videos' counts rows, and only then, in a new
-- statement (under READ COMMITTED a new snapshot), reads the pairs. Whoever waited sees the
-- other's swipes, committed, and counts from them. (Under REPEATABLE READ or SERIALIZABLE
-- that lock fails instead, on a row changed since the snapshot: a serialization failure to
-- retry.) The pairs' rows are read by (user_id, video_id): the unique key's index where it
-- exists, a hash join over the table when the load has dropped it.
create or replace function swiperec_private.count_swipes()
returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
    c_no_rows constant text := '(select null::bigint as id, null::uuid as user_id, '
        'null::bigint as video_id, null::text as decision, null::timestamptz as created_at '
        'where false)';
    v_new    text := case when tg_op = 'DELETE' then c_no_rows else 'new_rows' end;
    v_old    text := case when tg_op = 'INSERT' then c_no_rows else 'old_rows' end;
    v_videos bigint[];
begin
    execute format('select array_agg(distinct x.video_id) '
                   'from (select n.video_id from %s n union all select o.video_id from %s o) x',
                   v_new, v_old)
    into v_videos;
    if v_videos is null then  -- a statement that changed no row
        return null;
    end if;
    perform swiperec_private.lock_video_swipe_counts(v_videos);
    execute format($query$
        with pairs as (
            select n.user_id, n.video_id from %1$s n
            union
            select o.user_id, o.video_id from %2$s o
        ),
        now_rows as (
            select d.id, d.user_id, d.video_id, d.decision, d.created_at
            from pairs p
            join public.user_video_decisions d
              on d.user_id = p.user_id and d.video_id = p.video_id
        ),
        latest_after as (
            select distinct on (a.user_id, a.video_id) a.video_id, a.decision
            from now_rows a
            order by a.user_id, a.video_id, a.created_at desc, a.id desc
        ),
        latest_before as (
            select distinct on (b.user_id, b.video_id) b.video_id, b.decision
            from (select r.id, r.user_id, r.video_id, r.decision, r.created_at
                  from now_rows r
                  where not exists (select 1 from %1$s n where n.id = r.id)
                  union all
                  select o.id, o.user_id, o.video_id, o.decision, o.created_at
                  from %2$s o) b
            order by b.user_id, b.video_id, b.created_at desc, b.id desc
        ),
        votes as (
            select a.video_id, (a.decision = 'like')::integer as likes,
                   (a.decision = 'nope')::integer as nopes
            from latest_after a
            union all
            select b.video_id, -(b.decision = 'like')::integer, -(b.decision = 'nope')::integer
            from latest_before b
        )
        select swiperec_private.add_video_swipes(array_agg(d.video_id), array_agg(d.likes),
                                                 array_agg(d.nopes))
        from (select v.video_id, sum(v.likes)::bigint as likes, sum(v.nopes)::bigint as nopes
              from votes v
              group by v.video_id) d
        $query$, v_new, v_old);
    return null;
end
$$;

create or replace function swiperec_private.clear_swipe_counts()
returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
    truncate swiperec_private.video_swipe_counts;
    return null;
end
$$;

-- Every count from the swipes themselves (each user's latest swipe per video), for the
-- backfill below and a repair. Writers wait (the share lock) until it commits; readers keep the
-- old counts until then.
create or replace function swiperec_private.recount_video_swipes()
returns bigint
language plpgsql set search_path = ''
as $$
declare
    v_videos bigint;
begin
    lock table public.user_video_decisions in share mode;
    delete from swiperec_private.video_swipe_counts;
    insert into swiperec_private.video_swipe_counts (video_id, likes, nopes)
    select l.video_id, count(*) filter (where l.decision = 'like'),
           count(*) filter (where l.decision = 'nope')
    from (select distinct on (d.user_id, d.video_id) d.video_id, d.decision
          from public.user_video_decisions d
          order by d.user_id, d.video_id, d.created_at desc, d.id desc) l
    group by l.video_id
    order by l.video_id;
    get diagnostics v_videos = row_count;
    return v_videos;
end
$$;

revoke all on function swiperec_private.add_video_swipes(bigint[], bigint[], bigint[]),
    swiperec_private.lock_video_swipe_counts(bigint[]), swiperec_private.count_swipes(),
    swiperec_private.clear_swipe_counts(), swiperec_private.recount_video_swipes() from public;

-- One trigger per event: a trigger with transition tables has one event. They fire for COPY
-- as for INSERT, and for the deletes a video's deletion cascades to its swipes (once for the
-- statement that deleted the videos, with every cascaded swipe in its transition table).
drop trigger if exists user_video_decisions_count_inserted on public.user_video_decisions;
create trigger user_video_decisions_count_inserted
    after insert on public.user_video_decisions
    referencing new table as new_rows
    for each statement execute function swiperec_private.count_swipes();

drop trigger if exists user_video_decisions_count_deleted on public.user_video_decisions;
create trigger user_video_decisions_count_deleted
    after delete on public.user_video_decisions
    referencing old table as old_rows
    for each statement execute function swiperec_private.count_swipes();

drop trigger if exists user_video_decisions_count_updated on public.user_video_decisions;
create trigger user_video_decisions_count_updated
    after update on public.user_video_decisions
    referencing old table as old_rows new table as new_rows
    for each statement execute function swiperec_private.count_swipes();

drop trigger if exists user_video_decisions_count_truncated on public.user_video_decisions;
create trigger user_video_decisions_count_truncated
    after truncate on public.user_video_decisions
    for each statement execute function swiperec_private.clear_swipe_counts();

-- The backfill, after the triggers: creating them locked user_video_decisions against writes
-- until this migration commits, so no swipe falls between the count and the triggers.
select swiperec_private.recount_video_swipes();

-- Six finite weights (the match features) or eight (and the video's evidence) in one
-- dimension and a finite positive half-life, or neither (a CHECK that is NULL passes, hence
-- the explicit `is not null`s).
alter table public.embedding_sets drop constraint if exists embedding_sets_match_check;
alter table public.embedding_sets add constraint embedding_sets_match_check check (
    (match_weights is null and match_half_life_days is null)
    or (kind = 'video'
        and match_weights is not null and match_half_life_days is not null
        and array_ndims(match_weights) = 1 and cardinality(match_weights) in (6, 8)
        and array_position(match_weights, null) is null
        and not ('NaN'::real = any(match_weights))
        and not ('Infinity'::real = any(match_weights))
        and not ('-Infinity'::real = any(match_weights))
        and match_half_life_days > 0 and match_half_life_days < 'Infinity'::real));

comment on column public.embedding_sets.match_weights is
    'The ranking stage''s weights of its features (liked maker, noped maker, liked genres, '
    'noped genres, liked performers, noped performers, then optionally the video''s like '
    'log-odds and swipes), 6 or 8 of them, video sets only; null: none.';

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
    select s.match_weights, s.match_half_life_days * 86400 into v_match, v_half_life_s
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

    -- Candidates and likes carry their vectors as halfvec, once: the similarity matrix and the
    -- nearest-like search compare each of them N times, and pgvector's halfvec distances are
    -- ~10x faster than vector's here (SIMD), at an error of ~3e-5 in cosine.
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
        join public.videos f on f.id = d.video_id
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
        left join swiperec_private.video_swipe_counts sc on sc.video_id = r.video_id
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
        -- The ranking stage: the like score sigmoid(scale * cosine + bias + w . match
        -- + w7 * like log-odds + w8 * swipes) of the video's ranking terms, its match with the
        -- user's history and its own swipe evidence, plus the exploration bonus for a new
        -- release (a set written without ranking terms ranks by the cosine; one with 6 weights
        -- has no evidence terms: v_match[7] and [8] are null).
        select c.video_id, c.embedding::halfvec as embedding,
               (case when c.rank_scale is null then c.cosine
                     else 1 / (1 + exp(-least(greatest(
                         c.rank_scale * c.cosine + coalesce(c.rank_bias, 0) + c.match
                         + c.evidence
                         + case when c.new_release then c_new_release_bonus else 0 end,
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
           -- the cosines first (`offset 0` keeps the subquery), so the sort by rank carries
           -- (rank, cosine) pairs rather than the candidates with their vectors
           (select array_agg(x.similarity order by x.rank)
            from (select o.rank, (1 - (r.embedding <=> o.embedding))::real as similarity
                  from ranked o offset 0) x),
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
    'excluded), ranked by the videos'' ranking terms, their match with the user''s history '
    'and their own swipe evidence as of the request (the set''s match weights), pairwise '
    'similarities for MMR, evidence for reasons. Service role only: the function takes the '
    'user id from a verified JWT.';
