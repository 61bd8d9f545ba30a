-- The training data's staged migration from review-based pseudo-users to real users
-- (swiperec.migration). A plan is a list of stages, each a training mix (the pseudo-user weight,
-- the ratings that read as like / nope) with an entry condition (enough real users and swipes
-- in the training window) and a gate (a candidate trained at the mix must not do worse on real
-- users than the version serving, beyond stated margins). At most one plan is active.

create table if not exists public.migration_plans (
    name       text primary key check (length(btrim(name)) > 0),
    state      text not null default 'active'
               check (state in ('active', 'completed', 'abandoned')),
    config     jsonb not null,  -- swiperec.migration.plan.PlanConfig: stages, ratings, window
    stage      int not null default 0 check (stage >= 0),  -- the stage training uses now
    created_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create unique index if not exists migration_plans_one_active
    on public.migration_plans ((true)) where state = 'active';

-- What happened, in order: the plan (with the version serving then, trained at stage 0's mix),
-- advances and refused advances with their evidence, each candidate's gate on real users.
create table if not exists public.migration_events (
    id            bigint generated always as identity primary key,
    plan          text not null references public.migration_plans (name) on delete cascade,
    at            timestamptz not null default now(),
    event         text not null check (event in ('planned', 'advanced', 'refused', 'gate_passed',
                                                 'gate_failed', 'completed', 'abandoned')),
    stage         int not null,
    model_version text,
    decided_by    text not null,
    reason        text,
    evidence      jsonb not null default '{}'
);

create index if not exists migration_events_plan_idx on public.migration_events (plan, id);

alter table public.migration_plans enable row level security;
alter table public.migration_events enable row level security;
revoke all on public.migration_plans, public.migration_events from anon, authenticated;
