-- swiperec: every promotion (a serving switch) says whether it was forced, why, and by whom.
--
-- The registry promotes a version only when it is blessed; an operator may force an unblessed
-- or unevaluated version to serve, and then must give a reason. `embedding_activations` is the
-- log of serving switches: it now records the override with its reason, who and when.

alter table public.embedding_activations
    add column if not exists forced      boolean not null default false,
    add column if not exists reason      text,
    add column if not exists promoted_by text not null default current_user;

alter table public.embedding_activations
    drop constraint if exists embedding_activations_forced_has_reason;
alter table public.embedding_activations
    add constraint embedding_activations_forced_has_reason
    check (not forced or length(btrim(coalesce(reason, ''))) > 0);

comment on table public.embedding_activations is
    'Every serving switch (a promotion): version, the one before, when, by whom, and for a '
    'forced promotion of an unblessed version its reason.';
