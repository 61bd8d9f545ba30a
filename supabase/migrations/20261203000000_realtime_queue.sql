-- swiperec: real-time embeddings through a transactional outbox.
--
-- A new or changed video and every new swipe add a row to `embedding_queue` in the same
-- transaction as the change itself (statement-level triggers over transition tables: one
-- insert per statement, so a bulk COPY pays once, not per row). A crash after the commit loses
-- nothing: the row is there for the real-time worker (`swiperec realtime run`). The commit also
-- sends a NOTIFY on `swiperec_embedding_queue`, which wakes the worker without polling.
--
-- The queue is append-only, so an app's swipe never waits for a worker. A worker claims keys
-- (a user, a video) with a skip-locked advisory lock per key (`claim_queue_keys`), takes
-- every row of the keys it claimed (several swipes of one user: one re-embedding), and deletes
-- them in the transaction that writes the new vectors: a worker that dies returns them.

create table if not exists swiperec_private.embedding_queue (
    id          bigint generated always as identity primary key,
    kind        text not null check (kind in ('video', 'user')),
    key         text not null,     -- the video's id or the user's uuid, as text
    enqueued_at timestamptz not null default clock_timestamp()
);

create index if not exists embedding_queue_key
    on swiperec_private.embedding_queue (kind, key, enqueued_at);

comment on table swiperec_private.embedding_queue is
    'Videos and users whose embeddings are out of date, added by triggers in the transaction '
    'that changed them; the real-time worker re-embeds them and deletes their rows.';

-- A key the worker cannot embed even alone (it failed in a batch of its own) is moved here with
-- the error, so one bad row never holds up the queue; re-queue it once the cause is fixed.
create table if not exists swiperec_private.embedding_queue_failed (
    kind      text not null,
    key       text not null,
    events    integer not null,
    error     text not null,
    failed_at timestamptz not null default now(),
    primary key (kind, key, failed_at)
);

create or replace function swiperec_private.enqueue_swipes()
returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
    insert into swiperec_private.embedding_queue (kind, key)
    select distinct 'user', n.user_id::text from new_rows n;
    if found then
        perform pg_notify('swiperec_embedding_queue', '');
    end if;
    return null;
end
$$;

create or replace function swiperec_private.enqueue_new_videos()
returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
    insert into swiperec_private.embedding_queue (kind, key)
    select 'video', n.id::text from new_rows n;
    if found then
        perform pg_notify('swiperec_embedding_queue', '');
    end if;
    return null;
end
$$;

-- An update re-embeds a video only when a column the video tower reads changed.
create or replace function swiperec_private.enqueue_changed_videos()
returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
    insert into swiperec_private.embedding_queue (kind, key)
    select 'video', n.id::text
    from new_rows n join old_rows o on o.id = n.id
    where (n.title, n.description, n.genres, n.maker, n.performers, n.release_date,
           n.duration_sec)
          is distinct from
          (o.title, o.description, o.genres, o.maker, o.performers, o.release_date,
           o.duration_sec);
    if found then
        perform pg_notify('swiperec_embedding_queue', '');
    end if;
    return null;
end
$$;

drop trigger if exists user_video_decisions_enqueue on public.user_video_decisions;
create trigger user_video_decisions_enqueue
    after insert on public.user_video_decisions
    referencing new table as new_rows
    for each statement execute function swiperec_private.enqueue_swipes();

drop trigger if exists videos_enqueue_new on public.videos;
create trigger videos_enqueue_new
    after insert on public.videos
    referencing new table as new_rows
    for each statement execute function swiperec_private.enqueue_new_videos();

drop trigger if exists videos_enqueue_changed on public.videos;
create trigger videos_enqueue_changed
    after update on public.videos
    referencing old table as old_rows new table as new_rows
    for each statement execute function swiperec_private.enqueue_changed_videos();

-- The keys a worker claims: the oldest keys of the queue (by their oldest row, among the oldest
-- `p_scan` rows) whose advisory lock it gets, up to `p_keys` of them. Keys another worker holds
-- are passed over (skip-locked, per key: a user's rows are never split between two workers).
-- The locks last until the worker's transaction ends; a lock is tried only on keys looked at.
create or replace function swiperec_private.claim_queue_keys(p_keys integer, p_scan integer)
returns table (kind text, key text)
language plpgsql
as $$
#variable_conflict use_column
declare
    v_candidate record;
    v_taken     integer := 0;
begin
    for v_candidate in
        select q.kind, q.key, min(q.id) as first_id
        from (select e.id, e.kind, e.key from swiperec_private.embedding_queue e
              order by e.id limit p_scan) q
        group by q.kind, q.key
        order by first_id
    loop
        if pg_try_advisory_xact_lock(
               hashtextextended(v_candidate.kind || ':' || v_candidate.key, 0)) then
            kind := v_candidate.kind;
            key := v_candidate.key;
            return next;
            v_taken := v_taken + 1;
            exit when v_taken >= p_keys;
        end if;
    end loop;
end
$$;

-- A version's sets describe the data as of its snapshot (`as_of`). When it starts serving, every
-- user who swiped and every video added since is queued, so the real-time worker brings it up
-- to date (swipes during the pipeline run were embedded for the version serving then only).
alter table public.embedding_sets add column if not exists as_of timestamptz;

create or replace function swiperec_private.queue_changes_since_sets(p_version text)
returns integer
language plpgsql
as $$
declare
    v_as_of timestamptz := (select min(s.as_of) from public.embedding_sets s
                            where s.model_version = p_version);
    v_queued integer;
begin
    if v_as_of is null then
        return 0;
    end if;
    insert into swiperec_private.embedding_queue (kind, key)
    select 'user', d.user_id::text from public.user_video_decisions d
    where d.created_at > v_as_of group by d.user_id
    union all
    select 'video', v.id::text from public.videos v where v.created_at > v_as_of;
    get diagnostics v_queued = row_count;
    if v_queued > 0 then
        perform pg_notify('swiperec_embedding_queue', '');
    end if;
    return v_queued;
end
$$;

revoke all on function swiperec_private.enqueue_swipes(), swiperec_private.enqueue_new_videos(),
    swiperec_private.enqueue_changed_videos() from public;
