-- swiperec: the reason shown with each recommended video.
--
-- `recommendation_reason(...)` words the reason for one item from the evidence columns that
-- `enhanced_two_tower_recommendations` returns with it. It is the one place where the wording
-- and its order of preference live: the Edge Function and swiperec.serving both select it next
-- to the rows of `enhanced_two_tower_recommendations`.
--
-- Order of preference (blank = null, empty or only whitespace, where whitespace is what
-- JavaScript's trim() removes, full-width spaces included):
--   1. the user's liked video nearest to this one, unless
--      its similarity is known and not above 0             "because you liked <title>"
--   2. the user's most liked genre the video has           "because you like <genre>"
--   3. a maker the user liked                              "more from <maker>"
--   4. a performer the user liked                          "featuring <performer>"
--   5. otherwise, and always for the popular fallback
--      (source 'popular': no embedding and no likes)       "popular in <first non-blank genre>",
--                                                          else "popular right now"

create or replace function public.recommendation_reason(
    source           text,
    genres           text[],
    liked_title      text,
    liked_similarity real,
    shared_genre     text,
    shared_maker     text,
    shared_performer text
)
returns text
language plpgsql immutable parallel safe
as $$
declare
    -- `x ~ visible`: x has a character that is not whitespace (false when x is blank, null when
    -- x is null).
    visible constant text :=
        '[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]';
    genre text;
begin
    if source is distinct from 'popular' then
        if liked_title ~ visible
           and (liked_similarity is null
                or (liked_similarity > 0 and liked_similarity <> 'NaN')) then
            return 'because you liked ' || liked_title;
        elsif shared_genre ~ visible then
            return 'because you like ' || shared_genre;
        elsif shared_maker ~ visible then
            return 'more from ' || shared_maker;
        elsif shared_performer ~ visible then
            return 'featuring ' || shared_performer;
        end if;
    end if;
    foreach genre in array coalesce(genres, '{}') loop
        if genre ~ visible then
            return 'popular in ' || genre;
        end if;
    end loop;
    return 'popular right now';
end
$$;

comment on function public.recommendation_reason(text, text[], text, real, text, text, text) is
    'The one home of the wording of recommendation reasons and their order of preference: the '
    'reason for an item from the evidence columns of enhanced_two_tower_recommendations '
    '(source, genres, liked_title, liked_similarity, shared_genre, shared_maker, '
    'shared_performer). The Edge Function and swiperec.serving select it with each row.';

-- Internal to serving, like enhanced_two_tower_recommendations: not for the API roles. The
-- Edge Function connects through SUPABASE_DB_URL as the owner, which keeps the right to run it.
revoke all on function public.recommendation_reason(text, text[], text, real, text, text, text)
    from public, anon, authenticated;
