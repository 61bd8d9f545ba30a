-- swiperec: experiments between model versions (A/B tests and staged rollouts).
--
-- An experiment takes a range of the global user buckets (`user_bucket`, 0..9999: its traffic)
-- and splits the users in it into arms by a second bucket, hashed with the experiment's own
-- salt (`arm_bucket`), so that the next experiment on the same traffic does not put the same
-- users together again. Each arm is a row of `serving_routes` (route '<experiment>/<arm>') that
-- pins the arm's users to a model version: a user stays in their arm for the experiment's life,
-- across requests and serving switches. One layer: the traffic of two running experiments never
-- overlaps (an exclusion constraint, so two starts at once cannot both win).
--
-- A rollout is an experiment whose candidate arm grows by stages (its arm range widens, so
-- users only ever move from control to candidate) until it serves everyone and is promoted, or
-- is rolled back: every user back on control, in one transaction, recorded with its evidence.

-- -- assignment --------------------------------------------------------------------------------

alter table public.serving_routes
    add column if not exists salt     text not null default '',
    add column if not exists arm_from integer not null default 0,
    add column if not exists arm_to   integer not null default 10000;

alter table public.serving_routes drop constraint if exists serving_routes_arm_range;
alter table public.serving_routes
    add constraint serving_routes_arm_range
    check (0 <= arm_from and arm_from <= arm_to and arm_to <= 10000);

comment on column public.serving_routes.salt is
    'The experiment''s salt: users in [bucket_from, bucket_to) whose arm_bucket(user, salt) is '
    'in [arm_from, arm_to) take this route. Routes outside experiments: '''', 0, 10000 (all).';

create or replace function swiperec_private.arm_bucket(p_user uuid, p_salt text)
returns integer
language sql immutable parallel safe
as $$
    select case when p_salt = '' then 0
                else ((hashtextextended(p_user::text || '/' || p_salt, 0) & 9223372036854775807)
                      % 10000)::integer end
$$;

create or replace function public.serving_route_for(p_user uuid)
returns text
language sql stable
as $$
    select coalesce(
        (select r.route from public.serving_routes r
         where r.active
           and swiperec_private.user_bucket(p_user) >= r.bucket_from
           and swiperec_private.user_bucket(p_user) < r.bucket_to
           and swiperec_private.arm_bucket(p_user, r.salt) >= r.arm_from
           and swiperec_private.arm_bucket(p_user, r.salt) < r.arm_to
         order by r.bucket_to - r.bucket_from, r.route
         limit 1),
        'default')
$$;

revoke all on function public.serving_route_for(uuid) from public, anon, authenticated;

-- An experiment's analysis counts sessions: a user's previous request, found by this index.
create index if not exists serving_requests_user_time
    on public.serving_requests (user_id, created_at);

-- -- experiments -------------------------------------------------------------------------------

create table if not exists public.experiments (
    name            text primary key check (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    kind            text not null check (kind in ('ab', 'rollout')),
    state           text not null default 'running'
                    check (state in ('running', 'completed', 'stopped', 'rolled_back')),
    traffic_from    integer not null,
    traffic_to      integer not null,
    salt            text not null,
    control_version text not null references public.model_versions,
    config          jsonb not null,      -- metrics, margins, samples, duration, stages, alpha
    stage           integer,             -- a rollout's current stage (index into config.stages)
    started_at      timestamptz not null default now(),
    stage_started_at timestamptz not null default now(),
    ended_at        timestamptz,
    ended_by        text,
    end_reason      text,
    check (0 <= traffic_from and traffic_from < traffic_to and traffic_to <= 10000),
    check ((state = 'running') = (ended_at is null))
);

-- One layer: the traffic of running experiments never overlaps.
alter table public.experiments drop constraint if exists experiments_no_overlap;
alter table public.experiments
    add constraint experiments_no_overlap
    exclude using gist (int4range(traffic_from, traffic_to) with &&) where (state = 'running');

create table if not exists public.experiment_arms (
    experiment    text not null references public.experiments on delete cascade,
    arm           text not null check (arm ~ '^[a-z0-9][a-z0-9_-]{0,30}$'),
    route         text not null unique references public.serving_routes,  -- its version
    analysed      boolean not null default true,   -- false: a holdout, reported beside
    primary key (experiment, arm)
);

-- Every decision about an experiment, with who or what made it and the evidence it saw.
create table if not exists public.experiment_events (
    id          bigint generated always as identity primary key,
    experiment  text not null references public.experiments on delete cascade,
    event       text not null,             -- started, advanced, completed, rolled_back, stopped
    stage       integer,
    decided_by  text not null default current_user,
    reason      text,
    evidence    jsonb,
    created_at  timestamptz not null default now()
);
create index if not exists experiment_events_by_experiment
    on public.experiment_events (experiment, id);

comment on table public.experiments is
    'A/B tests and staged rollouts between model versions: traffic (global buckets), salt, '
    'state, config. Arms in experiment_arms; decisions in experiment_events.';

alter table public.experiments enable row level security;
alter table public.experiment_arms enable row level security;
alter table public.experiment_events enable row level security;
revoke all on public.experiments, public.experiment_arms, public.experiment_events
    from anon, authenticated;

-- -- the registry ------------------------------------------------------------------------------

-- A rolled-back version is recorded as such (the evidence is in experiment_events).
alter table public.model_versions drop constraint if exists model_versions_stage_check;
alter table public.model_versions
    add constraint model_versions_stage_check
    check (stage in ('candidate', 'blessed', 'production', 'archived', 'rolled_back'));
