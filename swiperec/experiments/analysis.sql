-- One experiment's per-user sums over a time window: the input of its statistics.
--
-- Parameters: experiment, start, end (the window), pre_start (the CUPED covariate's window
-- is [pre_start, experiment start)), experiment_start, new_user_days, attribution (seconds
-- after a serve within which the user's swipe on that video is its outcome:
-- swiperec_private.served_outcome, as monitoring counts it), session_gap, slow_ms (a request slower than this is "slow": the control arm's
-- p95 in the window).
--
-- One row per (user, arm) with a request in the window on one of the experiment's routes
-- (a user in two arms of one window would be two rows: the caller counts them as crossovers):
--   requests, errors (5xx), slow            serving_requests
--   served, answered, likes                 served items and their attributed swipes
--   lists, diversity_sum                    lists with two or more items; the sum of each
--                                           list's mean pairwise genre Jaccard distance
--   sessions                                requests with no request of the user in the
--                                           session_gap before them
--   served_pre, answered_pre, likes_pre     the same user's served items before the experiment
--   segment                                 'new' (first swipe within new_user_days before the
--                                           experiment began, or none) or 'returning'
-- A row counts for an arm when it was logged under the arm's route and served by the arm's
-- version (the log resolves the route when it writes, the version was resolved when serving:
-- around a stage change the two can disagree for a request, which is then left out).
with arms as (
    select a.arm, a.route, r.model_version
    from public.experiment_arms a join public.serving_routes r using (route)
    where a.experiment = %(experiment)s
),
requests as (
    select q.request_id, q.user_id, a.arm, q.status, q.duration_ms, q.created_at
    from public.serving_requests q
    join arms a on a.route = q.route
                and (q.model_version is null or q.model_version = a.model_version)
    where q.created_at >= %(start)s and q.created_at < %(end)s and q.user_id is not null
),
request_sums as (
    select r.user_id, r.arm, count(*) as requests,
           count(*) filter (where r.status >= 500) as errors,
           count(*) filter (where r.duration_ms > %(slow_ms)s) as slow,
           count(*) filter (where not exists (
               select 1 from public.serving_requests p
               where p.user_id = r.user_id and p.created_at < r.created_at
                 and p.created_at >= r.created_at - %(session_gap)s * interval '1 second'
           )) as sessions
    from requests r
    group by r.user_id, r.arm
),
served as (
    select s.request_id, s.user_id, s.video_id, s.position, s.created_at, a.arm
    from public.served_recommendations s
    join arms a on a.route = s.route and s.model_version = a.model_version
    where s.created_at >= %(start)s and s.created_at < %(end)s
),
outcomes as (
    select s.user_id, s.arm, o.decision
    from served s
    left join lateral swiperec_private.served_outcome(
        s.user_id, s.video_id, s.created_at, %(attribution)s) o on true
),
item_sums as (
    select user_id, arm, count(*) as served, count(decision) as answered,
           count(*) filter (where decision = 'like') as likes
    from outcomes
    group by user_id, arm
),
list_diversity as (
    select a.request_id, a.user_id, a.arm,
           avg(1 - coalesce(
               cardinality(array(select unnest(va.genres) intersect select unnest(vb.genres)))::float8
               / nullif(cardinality(array(select unnest(va.genres) union select unnest(vb.genres))), 0),
               0)) as diversity
    from served a
    join served b on b.request_id = a.request_id and b.position > a.position
    join public.videos va on va.id = a.video_id
    join public.videos vb on vb.id = b.video_id
    group by a.request_id, a.user_id, a.arm
),
diversity_sums as (
    select user_id, arm, count(*) as lists, sum(diversity) as diversity_sum
    from list_diversity
    group by user_id, arm
),
pre as (
    select s.user_id, count(*) as served_pre, count(o.decision) as answered_pre,
           count(*) filter (where o.decision = 'like') as likes_pre
    from public.served_recommendations s
    left join lateral swiperec_private.served_outcome(
        s.user_id, s.video_id, s.created_at, %(attribution)s) o on true
    where s.created_at >= %(pre_start)s and s.created_at < %(experiment_start)s
      and s.user_id in (select user_id from request_sums)
    group by s.user_id
)
select r.user_id::text, r.arm,
       case when (select min(d.created_at) from public.user_video_decisions d
                  where d.user_id = r.user_id)
                 >= %(experiment_start)s - %(new_user_days)s * interval '24 hours'
                 or not exists (select 1 from public.user_video_decisions d
                                where d.user_id = r.user_id)
            then 'new' else 'returning' end as segment,
       r.requests, r.errors, r.slow, r.sessions,
       coalesce(i.served, 0) as served, coalesce(i.answered, 0) as answered,
       coalesce(i.likes, 0) as likes,
       coalesce(d.lists, 0) as lists, coalesce(d.diversity_sum, 0)::float8 as diversity_sum,
       coalesce(p.served_pre, 0) as served_pre, coalesce(p.answered_pre, 0) as answered_pre,
       coalesce(p.likes_pre, 0) as likes_pre
from request_sums r
left join item_sums i using (user_id, arm)
left join diversity_sums d using (user_id, arm)
left join pre p using (user_id)
order by r.arm, r.user_id
