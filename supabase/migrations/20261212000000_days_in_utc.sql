-- swiperec: the database's functions count days in UTC, whatever the server's, a role's or a
-- session's time zone.
--
-- Supabase runs in UTC, and so do the snapshots (a video is in one when it was released by the
-- cutoff's UTC day), the serving logs' day partitions and the embedded server. Two functions
-- read the session's `TimeZone`, which another server or a role may set to another zone:
--
-- - `enhanced_two_tower_recommendations` takes as new releases the videos released in the last
--   60 days up to today, and leaves out a video announced for a later day; "today" is
--   `current_date`, the session zone's day, a day ahead of or behind UTC's for part of every day.
-- - `ensure_day_partitions` steps from day to day by `generate_series` over dates, which
--   PostgreSQL runs as timestamptz in the session's zone: where daylight saving starts at
--   midnight (America/Santiago), the days after the change fall at 01:00 and the range's last
--   day was not made.
--
-- The monitoring migration (20261203010000) now makes the function with this setting and splits
-- an unpartitioned log by UTC days; a database that applied it before shows it as changed since
-- in `swiperec db status`, and this migration brings its function to the same setting.
--
-- Each function's setting holds for its own statements only: what it returns reaches the
-- caller unchanged. A later `create or replace function` of either must repeat
-- `set timezone = 'UTC'` among its settings (it replaces them all).

alter function public.enhanced_two_tower_recommendations(uuid, integer, text[], text[], bigint[],
                                                         integer)
    set timezone = 'UTC';

alter function swiperec_private.ensure_day_partitions(regclass, date, date)
    set timezone = 'UTC';
