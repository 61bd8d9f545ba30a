-- swiperec: real-time embeddings through a transactional outbox.
--
-- A new or changed video and every new swipe add a row to `embedding_queue` in the same
-- transaction as the change itself (statement-level triggers over transition tables: one
-- insert per statement, so a bulk COPY pays once, not per row). A crash after the commit loses
-- nothing: the row is there for the real-time worker (`swiperec realtime run`). The commit also
-- sends a NOTIFY on `swiperec_embedding_queue`, which wakes the worker without polling.
--
-- The queue is append-only, so an app's swipe never waits for a worker. A worker claims rows
-- one key at a time (an advisory lock per user or video, rows FOR UPDATE SKIP LOCKED), takes
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

revoke all on function swiperec_private.enqueue_swipes(), swiperec_private.enqueue_new_videos(),
    swiperec_private.enqueue_changed_videos() from public;
