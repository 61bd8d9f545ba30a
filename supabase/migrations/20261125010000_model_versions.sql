-- swiperec: model versions and their evaluations.
--
-- One row per trained model version: where it is, its stage, and the evaluator's results and
-- blessing. "The model in production" is the version `serving_state` names; the evaluator
-- compares a candidate with that version's evaluation. Lineage (which data, transform and run
-- produced a version) builds on this table.

create table if not exists public.model_versions (
    model_version text primary key,
    stage         text not null default 'candidate'
                  check (stage in ('candidate', 'blessed', 'production', 'archived')),
    model_uri     text,
    blessed       boolean,
    evaluation    jsonb,      -- the evaluator's results (curves left out)
    blessing      jsonb,      -- its checks and reasons
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

alter table public.model_versions enable row level security;
revoke all on public.model_versions from anon, authenticated;
