-- The outcome of a served item, defined once: the user's first swipe on that video within
-- `attribution_seconds` after it was served (null: unanswered). Monitoring's metrics
-- (swiperec/monitoring/metrics.sql) and the experiments' analysis
-- (swiperec/experiments/analysis.sql) both read outcomes through it.
--
-- Used in FROM (`left join lateral swiperec_private.served_outcome(...) o on true`): a SQL
-- set-returning function that is stable, not strict and not security definer is inlined by
-- the planner, so it costs what the subquery written out costs (an index scan on
-- user_video_decisions (user_id, video_id, created_at)).

create or replace function swiperec_private.served_outcome(
    p_user_id uuid,
    p_video_id bigint,
    p_served_at timestamptz,
    p_attribution_seconds float8
) returns table (decision text)
language sql
stable
as $$
    select d.decision
    from public.user_video_decisions d
    where d.user_id = p_user_id
      and d.video_id = p_video_id
      and d.created_at >= p_served_at
      and d.created_at < p_served_at + p_attribution_seconds * interval '1 second'
    order by d.created_at
    limit 1
$$;

revoke all on function swiperec_private.served_outcome(uuid, bigint, timestamptz, float8)
    from public;
