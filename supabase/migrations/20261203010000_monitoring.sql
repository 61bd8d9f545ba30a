-- swiperec: recommendation-quality monitoring.
--
-- What serving logs, partitioned by day so that old days are dropped whole (retention) and a
-- pass over one hour reads one partition: `served_recommendations` (one row per item served)
-- and `serving_requests` (one row per request the Edge Function answered, errors included,
-- with its duration). A default partition takes any row whose day has no partition yet, so an
-- insert never fails; `swiperec monitor run` creates the coming days' partitions ahead and
-- moves such rows into them.
--
-- What monitoring writes: `monitoring_metrics` (one row per time bucket, model version, serving
-- route, segment and metric; a bucket is recomputed whole, so a pass is idempotent),
-- `monitoring_alerts` (alerts fired), and its bookkeeping. Nothing here is for the API roles.

-- -- day partitions -----------------------------------------------------------------------------

create or replace function swiperec_private.ensure_day_partitions(
    p_table regclass, p_from date, p_to date
)
returns integer
language plpgsql
set timezone = 'UTC'  -- generate_series over dates runs as timestamptz, in the session's zone
as $$
declare
    v_base     text := (select relname from pg_class where oid = p_table);
    v_default  regclass := to_regclass(format('swiperec_private.%I', v_base || '_default'));
    v_day      date;
    v_name     text;
    v_created  integer := 0;
begin
    for v_day in select generate_series(p_from, p_to, interval '1 day')::date loop
        v_name := v_base || '_' || to_char(v_day, 'YYYYMMDD');
        continue when to_regclass(format('swiperec_private.%I', v_name)) is not null;
        execute format('create table swiperec_private.%I (like %s including defaults)',
                       v_name, p_table);
        if v_default is not null then
            -- Rows the default partition took for this day move into the day's own partition;
            -- inserts wait (a few ms) until the day's partition is attached, so none lands in
            -- the default partition between the move and the attach.
            execute format('lock table %s in share row exclusive mode', v_default);
            execute format(
                'with moved as (delete from %s where created_at >= %L and created_at < %L'
                ' returning *) insert into swiperec_private.%I select * from moved',
                v_default, v_day::timestamp at time zone 'UTC',
                (v_day + 1)::timestamp at time zone 'UTC', v_name);
        end if;
        execute format('alter table %s attach partition swiperec_private.%I'
                       ' for values from (%L) to (%L)', p_table, v_name,
                       v_day::timestamp at time zone 'UTC',
                       (v_day + 1)::timestamp at time zone 'UTC');
        v_created := v_created + 1;
    end loop;
    return v_created;
end
$$;

-- Drops the day partitions of `p_table` that end on or before `p_before`; returns their names.
create or replace function swiperec_private.drop_day_partitions(p_table regclass, p_before date)
returns setof text
language plpgsql
as $$
declare
    v_base text := (select relname from pg_class where oid = p_table);
    v_part record;
begin
    for v_part in
        select c.relname
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = p_table and c.relname ~ ('^' || v_base || '_[0-9]{8}$')
          and to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= p_before
        order by c.relname
    loop
        execute format('alter table %s detach partition swiperec_private.%I', p_table,
                       v_part.relname);
        execute format('drop table swiperec_private.%I', v_part.relname);
        return next v_part.relname;
    end loop;
end
$$;

-- -- served_recommendations, partitioned by day ----------------------------------------------------

do $$
begin
    if (select c.relkind from pg_class c where c.oid = 'public.served_recommendations'::regclass)
       = 'r' then
        alter table public.served_recommendations rename to served_recommendations_unpartitioned;
        alter index if exists public.served_recommendations_user_time
            rename to served_recommendations_unpartitioned_user_time;
        alter index if exists public.served_recommendations_version_time
            rename to served_recommendations_unpartitioned_version_time;
        alter table public.served_recommendations_unpartitioned
            rename constraint served_recommendations_pkey
            to served_recommendations_unpartitioned_pkey;
    end if;
end
$$;

create sequence if not exists public.served_recommendations_item_id_seq as bigint;

create table if not exists public.served_recommendations (
    id            bigint not null default nextval('public.served_recommendations_item_id_seq'),
    request_id    uuid not null,
    user_id       uuid not null,
    video_id      bigint not null,
    position      smallint not null,                -- 1-based, as shown
    score         real not null,
    model_version text not null,
    source        text not null,
    reason        text not null,
    route         text not null default 'default',  -- the serving route, 'default' outside any
    created_at    timestamptz not null default now(),
    primary key (id, created_at)
) partition by range (created_at);

alter sequence public.served_recommendations_item_id_seq owned by public.served_recommendations.id;

create table if not exists swiperec_private.served_recommendations_default
    partition of public.served_recommendations default;

create index if not exists served_recommendations_user_time
    on public.served_recommendations (user_id, created_at);
create index if not exists served_recommendations_version_time
    on public.served_recommendations (model_version, created_at);
create index if not exists served_recommendations_time
    on public.served_recommendations (created_at);

comment on table public.served_recommendations is
    'Every recommendation served: one row per item of a response, partitioned by day. '
    'Monitoring and A/B analysis read it.';
comment on column public.served_recommendations.source is
    'Where the user''s query vector came from: embedding (their stored vector), realtime (their '
    'vector, computed during the request by the real-time endpoint), recent_likes (the mean of '
    'their recent likes'' vectors), popular (no likes: popular videos).';

do $$
declare
    v_first date;
begin
    if to_regclass('public.served_recommendations_unpartitioned') is not null then
        select (min(created_at) at time zone 'UTC')::date into v_first
        from public.served_recommendations_unpartitioned;
        if v_first is not null then
            perform swiperec_private.ensure_day_partitions(
                'public.served_recommendations', v_first, (now() at time zone 'UTC')::date);
        end if;
        insert into public.served_recommendations
            (request_id, user_id, video_id, position, score, model_version, source, reason,
             created_at)
        select request_id, user_id, video_id, position, score, model_version, source, reason,
               created_at
        from public.served_recommendations_unpartitioned order by id;
        drop table public.served_recommendations_unpartitioned;
    end if;
end
$$;

-- -- serving_requests: one row per request ---------------------------------------------------------

create table if not exists public.serving_requests (
    request_id    uuid not null,
    user_id       uuid,                             -- null when the token did not verify
    status        smallint not null,                -- the HTTP status answered
    duration_ms   real not null,                    -- from the request's arrival to the answer
    model_version text,
    route         text,
    source        text,
    items         smallint not null default 0,
    created_at    timestamptz not null default now(),
    primary key (request_id, created_at)
) partition by range (created_at);

create table if not exists swiperec_private.serving_requests_default
    partition of public.serving_requests default;
create index if not exists serving_requests_time on public.serving_requests (created_at);

comment on table public.serving_requests is
    'Every request the Edge Function answered (errors too): status, duration, version, route. '
    'Partitioned by day.';

-- The route that serves a user ('default': none), the one home of that rule: the request log
-- records it, and `serving_version_for` now reads the version through it.
create or replace function public.serving_route_for(p_user uuid)
returns text
language sql stable
as $$
    select coalesce(
        (select r.route from public.serving_routes r
         where r.active
           and swiperec_private.user_bucket(p_user) >= r.bucket_from
           and swiperec_private.user_bucket(p_user) < r.bucket_to
         order by r.bucket_to - r.bucket_from, r.route
         limit 1),
        'default')
$$;

create or replace function public.serving_version_for(p_user uuid)
returns text
language sql stable
as $$
    select coalesce(
        (select r.model_version from public.serving_routes r
         where r.active and r.route = public.serving_route_for(p_user)),
        (select s.model_version from public.serving_state s))
$$;

revoke all on function public.serving_route_for(uuid), public.serving_version_for(uuid)
    from public, anon, authenticated;

-- Today's and the next days' partitions from the start (`swiperec monitor run` keeps creating
-- them ahead).
select swiperec_private.ensure_day_partitions(t, (now() at time zone 'UTC')::date,
                                              (now() at time zone 'UTC')::date + 3)
from unnest(array['public.served_recommendations', 'public.serving_requests']::regclass[]) t;

-- -- what monitoring writes ------------------------------------------------------------------------

create table if not exists public.monitoring_metrics (
    bucket_seconds integer not null check (bucket_seconds > 0),
    bucket_start   timestamptz not null,
    model_version  text not null,                   -- '*': every version together
    route          text not null,                   -- '*': every route together
    segment        text not null,                   -- 'all', 'user:new', 'source:popular', ...
    metric         text not null,
    value          double precision,
    samples        bigint not null,                 -- the denominator the value rests on
    computed_at    timestamptz not null default now(),
    primary key (bucket_seconds, bucket_start, model_version, route, segment, metric)
);

create index if not exists monitoring_metrics_metric_time
    on public.monitoring_metrics (metric, segment, bucket_seconds, bucket_start);

comment on table public.monitoring_metrics is
    'Recommendation-quality metrics per time bucket, model version, serving route and segment '
    '(swiperec monitor run). A bucket is recomputed whole until its outcomes are final.';

create table if not exists public.monitoring_alerts (
    id             bigint generated always as identity primary key,
    rule           text not null,
    severity       text not null default 'warning',
    bucket_seconds integer not null,
    bucket_start   timestamptz not null,
    model_version  text not null,
    route          text not null,
    segment        text not null,
    metric         text not null,
    value          double precision,
    baseline       double precision,
    samples        bigint not null,
    message        text not null,
    fired_at       timestamptz not null default now(),
    delivered_at   timestamptz,                      -- posted to the webhook
    delivery_error text,
    unique (rule, bucket_seconds, bucket_start, model_version, route, segment)
);

comment on table public.monitoring_alerts is
    'Alerts fired by the monitoring rules (one per rule, bucket, version, route, segment).';

-- Per bucket size: buckets ending at or before `final_through` are final (their outcomes can
-- no longer change) and are never recomputed.
create table if not exists swiperec_private.monitoring_state (
    bucket_seconds integer primary key,
    final_through  timestamptz not null,
    updated_at     timestamptz not null default now()
);

alter table public.served_recommendations enable row level security;
alter table public.serving_requests enable row level security;
alter table public.monitoring_metrics enable row level security;
alter table public.monitoring_alerts enable row level security;
revoke all on public.served_recommendations, public.serving_requests, public.monitoring_metrics,
    public.monitoring_alerts from anon, authenticated;
revoke all on sequence public.served_recommendations_item_id_seq from anon, authenticated;

-- What a version's recent input looked like when it was trained: the last week of swipes
-- before it was registered (like share, swipes per active user, the genre mix of likes).
-- Input drift compares recent swipes with it.
create table if not exists swiperec_private.monitoring_baselines (
    model_version   text primary key,
    window_start    timestamptz,
    window_end      timestamptz,
    swipes          bigint not null,
    like_rate       double precision,
    swipes_per_user double precision,
    genre_mix       jsonb not null default '{}',
    computed_at     timestamptz not null default now()
);
