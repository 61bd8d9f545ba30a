-- One time bucket's recommendation-quality metrics, computed inside PostgreSQL.
--
-- Parameters: start, end (the bucket), attribution (seconds after a serve within which the
-- user's swipe on that video is its outcome: swiperec_private.served_outcome), session_gap,
-- new_user_days, new_video_days.
-- Returns (model_version, route, segment, metric, value, samples): one row per series, for each
-- version and route and for all of them together ('*'). `samples` is the denominator.
--
-- Served items in the bucket (served_recommendations) joined with what followed:
--   swipe_through  swiped served items / served items
--   like_rate      liked / swiped served items (the exposure: items the user answered)
--   hit_rate       requests with at least one liked item / requests
--   likes_per_session  liked served items / sessions (a session starts after session_gap)
--   coverage       distinct videos served / videos in the catalogue
--   novelty        mean -log2 of a served video's share of all likes (add-one smoothed)
--   popularity_pct mean popularity percentile of served videos (0.5: no popularity bias)
--   genre_diversity, maker_diversity, embedding_diversity  within a list: mean pairwise genre
--                  Jaccard distance, distinct makers / items, mean pairwise cosine distance in
--                  the serving version's own embedding space
--   source_share:<source>  requests by source / requests
-- Requests (serving_requests): requests_logged, error_rate (5xx), latency_p50/p95/p99_ms.
-- Users who swiped in the bucket: freshness_p50_s / freshness_p95_s (their latest swipe minus
-- their embedding's update time, 0 when fresh), without_embedding_share.
-- Swipes against the serving version's training week (monitoring_baselines): swipe_like_rate,
-- drift_like_rate (difference), drift_genre_tv (total variation distance of the liked genre
-- mix), drift_activity (swipes per active user in the bucket / the baseline's per hour: read it
-- with hourly buckets).
-- Segments: all; user:new / user:returning; source:<source>; video:new / video:old (item
-- metrics only).
-- Times are compared in hours and days in UTC (24 hours, never `interval '1 day'`, which in
-- a session zone with daylight saving is 23 or 25 hours across a change), whatever the
-- session's TimeZone.

with served as (
    select s.request_id, s.user_id, s.video_id, s.position, s.model_version, s.route, s.source,
           s.created_at
    from public.served_recommendations s
    where s.created_at >= %(start)s and s.created_at < %(end)s
),
served_users as (
    select u.user_id,
           (select min(d.created_at) from public.user_video_decisions d
            where d.user_id = u.user_id) as first_swipe_at
    from (select distinct user_id from served) u
),
items as (
    select s.*, o.decision, v.genres, v.maker,
           case when su.first_swipe_at is null
                     or su.first_swipe_at > s.created_at - %(new_user_days)s * interval '24 hours'
                then 'new' else 'returning' end as user_segment,
           case when coalesce(v.release_date::timestamp at time zone 'UTC', v.created_at)
                     > s.created_at - %(new_video_days)s * interval '24 hours'
                then 'new' else 'old' end as video_segment
    from served s
    join public.videos v on v.id = s.video_id
    join served_users su on su.user_id = s.user_id
    left join lateral swiperec_private.served_outcome(
        s.user_id, s.video_id, s.created_at, %(attribution)s) o on true
),
popularity as (
    select v.id as video_id,
           coalesce(p.likes, 0) as likes,
           -- mid-rank percentile: ties (many videos without likes) share their middle rank
           (cume_dist() over w + percent_rank() over w) / 2 as pct
    from public.videos v
    left join swiperec_private.video_popularity p on p.video_id = v.id
    window w as (order by coalesce(p.likes, 0))
),
catalogue as (
    select count(*)::float8 as videos, sum(likes)::float8 as likes from popularity
),
requests as (
    select i.request_id, min(i.user_id::text)::uuid as user_id, min(i.model_version) as model_version,
           min(i.route) as route, min(i.source) as source, min(i.user_segment) as user_segment,
           min(i.created_at) as created_at, count(*) as items,
           count(*) filter (where i.decision = 'like') as likes,
           count(distinct i.maker)::float8 / count(*) as maker_diversity
    from items i
    group by i.request_id
),
request_pairs as (
    select a.request_id,
           avg(1 - coalesce(
               cardinality(array(select unnest(a.genres) intersect select unnest(b.genres)))::float8
               / nullif(cardinality(array(select unnest(a.genres) union select unnest(b.genres))), 0),
               0)) as genre_diversity,
           avg(ea.embedding <=> eb.embedding) as embedding_diversity
    from items a
    join items b on b.request_id = a.request_id and b.position > a.position
    left join public.video_embeddings ea
        on ea.model_version = a.model_version and ea.video_id = a.video_id
    left join public.video_embeddings eb
        on eb.model_version = b.model_version and eb.video_id = b.video_id
    group by a.request_id
),
request_rows as (
    select r.*, p.genre_diversity, p.embedding_diversity,
           not exists (
               select 1 from public.served_recommendations e
               where e.user_id = r.user_id and e.created_at < r.created_at
                 and e.created_at >= r.created_at - %(session_gap)s * interval '1 second'
           ) as starts_session,
           row_number() over (partition by r.user_id order by r.created_at) = 1
               as first_in_bucket
    from requests r
    left join request_pairs p on p.request_id = r.request_id
),
-- A session counts in the bucket where it starts, and in a later bucket it runs on into (at
-- the user's first request there): likes_per_session divides by the sessions each bucket saw.
session_rows as (
    select r.*, r.starts_session or r.first_in_bucket as counts_session
    from request_rows r
),
item_metrics as (
    select case when grouping(i.model_version) = 1 then '*' else i.model_version end
               as model_version,
           case when grouping(i.route) = 1 then '*' else i.route end as route,
           seg.segment,
           count(*) as served_items,
           count(i.decision) as swiped,
           count(*) filter (where i.decision = 'like') as liked,
           count(distinct i.video_id) as distinct_videos,
           avg(-ln((p.likes + 1) / (c.likes + c.videos)) / ln(2.0)) as novelty,
           avg(p.pct) as popularity_pct,
           max(c.videos) as catalogue_videos
    from items i
    join popularity p on p.video_id = i.video_id
    cross join catalogue c
    cross join lateral (values ('all'), ('user:' || i.user_segment), ('source:' || i.source),
                               ('video:' || i.video_segment)) as seg(segment)
    group by grouping sets ((i.model_version, i.route, seg.segment), (seg.segment))
),
request_metrics as (
    select case when grouping(r.model_version) = 1 then '*' else r.model_version end
               as model_version,
           case when grouping(r.route) = 1 then '*' else r.route end as route,
           seg.segment,
           count(*) as requests,
           count(*) filter (where r.likes > 0) as hits,
           count(*) filter (where r.counts_session) as sessions,
           sum(r.likes) as liked,
           avg(r.maker_diversity) as maker_diversity,
           avg(r.genre_diversity) as genre_diversity,
           avg(r.embedding_diversity) as embedding_diversity,
           count(r.genre_diversity) as genre_lists,
           count(r.embedding_diversity) as embedded_lists
    from session_rows r
    cross join lateral (values ('all'), ('user:' || r.user_segment), ('source:' || r.source))
        as seg(segment)
    group by grouping sets ((r.model_version, r.route, seg.segment), (seg.segment))
),
source_shares as (
    select case when grouping(r.model_version) = 1 then '*' else r.model_version end
               as model_version,
           case when grouping(r.route) = 1 then '*' else r.route end as route,
           r.source, count(*) as requests,
           sum(count(*)) over (partition by grouping(r.model_version), r.model_version, r.route)
               as total
    from request_rows r
    group by grouping sets ((r.model_version, r.route, r.source), (r.source))
),
service as (
    select case when grouping(q.model_version) = 1 then '*'
                else coalesce(q.model_version, '-') end as model_version,
           case when grouping(q.route) = 1 then '*' else coalesce(q.route, '-') end as route,
           count(*) as requests,
           count(*) filter (where q.status >= 500) as errors,
           percentile_cont(0.5) within group (order by q.duration_ms) as p50,
           percentile_cont(0.95) within group (order by q.duration_ms) as p95,
           percentile_cont(0.99) within group (order by q.duration_ms) as p99
    from public.serving_requests q
    where q.created_at >= %(start)s and q.created_at < %(end)s
    group by grouping sets ((q.model_version, q.route), ())
),
swipes as (
    select d.user_id, d.video_id, d.decision, d.created_at,
           public.serving_version_for(d.user_id) as model_version,
           public.serving_route_for(d.user_id) as route
    from public.user_video_decisions d
    where d.created_at >= %(start)s and d.created_at < %(end)s
),
freshness as (
    select case when grouping(f.model_version) = 1 then '*'
                else coalesce(f.model_version, '-') end as model_version,
           case when grouping(f.route) = 1 then '*' else f.route end as route,
           count(*) as users,
           count(*) filter (where f.updated_at is null) as without_embedding,
           percentile_cont(0.5) within group (order by f.lag_s) as p50,
           percentile_cont(0.95) within group (order by f.lag_s) as p95
    from (
        select s.user_id, s.model_version, s.route, e.updated_at,
               greatest(0, extract(epoch from max(s.created_at) - e.updated_at)) as lag_s
        from swipes s
        left join public.user_embeddings e
            on e.model_version = s.model_version and e.user_id = s.user_id
        group by s.user_id, s.model_version, s.route, e.updated_at
    ) f
    group by grouping sets ((f.model_version, f.route), ())
),
swipe_stats as (
    select case when grouping(s.model_version) = 1 then '*'
                else coalesce(s.model_version, '-') end as model_version,
           case when grouping(s.route) = 1 then '*' else s.route end as route,
           count(*) as swipes,
           count(*) filter (where s.decision = 'like') as likes,
           count(distinct s.user_id) as users
    from swipes s
    group by grouping sets ((s.model_version, s.route), ())
),
liked_genres as (
    select case when grouping(s.model_version) = 1 then '*'
                else coalesce(s.model_version, '-') end as model_version,
           case when grouping(s.route) = 1 then '*' else s.route end as route,
           g.genre, count(*)::float8 as n
    from swipes s
    join public.videos v on v.id = s.video_id
    cross join lateral unnest(v.genres) as g(genre)
    where s.decision = 'like'
    group by grouping sets ((s.model_version, s.route, g.genre), (g.genre))
),
genre_mix as (
    select model_version, route, genre, n / sum(n) over (partition by model_version, route) as share
    from liked_genres
),
-- The baseline a series is compared with: its own version's, or for '*' the version serving.
series_baseline as (
    select ss.model_version, ss.route, b.like_rate, b.swipes_per_user, b.genre_mix
    from swipe_stats ss
    join swiperec_private.monitoring_baselines b
      on b.model_version = case when ss.model_version = '*'
                                then (select model_version from public.serving_state)
                                else ss.model_version end
),
genre_tv as (
    select sb.model_version, sb.route,
           0.5 * sum(abs(coalesce(x.current_share, 0) - coalesce(x.base_share, 0))) as tv
    from series_baseline sb
    cross join lateral (
        select c.share as current_share, b.share as base_share
        from (select m.genre, m.share from genre_mix m
              where m.model_version = sb.model_version and m.route = sb.route) c
        full join (select key as genre, value::float8 as share
                   from jsonb_each_text(sb.genre_mix)) b on b.genre = c.genre
    ) x
    group by sb.model_version, sb.route
)
select model_version, route, segment, metric, value, samples
from item_metrics
cross join lateral (values
    ('served_items', served_items::float8, served_items),
    ('swipe_through', swiped::float8 / nullif(served_items, 0), served_items),
    ('like_rate', liked::float8 / nullif(swiped, 0), swiped),
    ('coverage', distinct_videos / nullif(catalogue_videos, 0), served_items),
    ('novelty', novelty, served_items),
    ('popularity_pct', popularity_pct, served_items)
) as m(metric, value, samples)
union all
select model_version, route, segment, metric, value, samples
from request_metrics
cross join lateral (values
    ('requests', requests::float8, requests),
    ('hit_rate', hits::float8 / nullif(requests, 0), requests),
    ('likes_per_session', liked::float8 / nullif(sessions, 0), sessions),
    ('maker_diversity', maker_diversity, requests),
    ('genre_diversity', genre_diversity, genre_lists),
    ('embedding_diversity', embedding_diversity, embedded_lists)
) as m(metric, value, samples)
union all
select model_version, route, 'all', 'source_share:' || source, requests::float8 / total, total
from source_shares
union all
select model_version, route, 'all', metric, value, requests
from service
cross join lateral (values
    ('requests_logged', requests::float8),
    ('error_rate', errors::float8 / nullif(requests, 0)),
    ('latency_p50_ms', p50), ('latency_p95_ms', p95), ('latency_p99_ms', p99)
) as m(metric, value)
union all
select model_version, route, 'all', metric, value, users
from freshness
cross join lateral (values
    ('freshness_p50_s', p50), ('freshness_p95_s', p95),
    ('without_embedding_share', without_embedding::float8 / nullif(users, 0))
) as m(metric, value)
union all
select ss.model_version, ss.route, 'all', m.metric, m.value, ss.swipes
from swipe_stats ss
left join series_baseline sb on sb.model_version = ss.model_version and sb.route = ss.route
left join genre_tv g on g.model_version = ss.model_version and g.route = ss.route
cross join lateral (values
    ('swipe_like_rate', ss.likes::float8 / nullif(ss.swipes, 0)),
    ('drift_like_rate', ss.likes::float8 / nullif(ss.swipes, 0) - sb.like_rate),
    ('drift_activity', ss.swipes::float8 / nullif(ss.users, 0) / nullif(sb.swipes_per_user, 0)),
    ('drift_genre_tv', g.tv)
) as m(metric, value)
where m.value is not null or m.metric = 'swipe_like_rate'
