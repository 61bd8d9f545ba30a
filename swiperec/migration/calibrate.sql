-- The calibration's aggregates (swiperec/migration/calibrate.py): how reviewers' ratings map
-- onto real users' like/nope on the same videos. Two queries, each after its `-- query:` line.
--
-- Parameters: until (timestamptz or null: only rows created before it count), and for
-- `weight` like_rating and nope_rating (the thresholds whose pseudo-labels are scored).
--
-- A real user's swipe is their latest swipe on the video (before until): one opinion per
-- (user, video), so a user who swipes a video again is not two users. A review is one row of
-- video_reviews (one per reviewer and video). A pair is a (review, swipe) on the same video.

-- query: levels
-- One row per rating level (rating 1-5) and one for all levels (rating null: the base).
-- Per video v and level k: n = reviews of level k on v, m = swipes on v, l = likes among them;
-- the level's like-rate is sum(n*l) / sum(n*m) over videos (pairs, so a video weighs by its
-- reviews), and sxx, sxy, syy (sums of (n*m)^2, (n*m)*(n*l), (n*l)^2 per video) give its
-- cluster-robust variance. Integers throughout: the caller's arithmetic on them is exact.
with reviews as (
    select video_id, rating::int as rating
    from public.video_reviews
    where %(until)s::timestamptz is null or created_at < %(until)s::timestamptz
),
swipes as (
    select distinct on (user_id, video_id) video_id, decision = 'like' as liked
    from public.user_video_decisions
    where (%(until)s::timestamptz is null or created_at < %(until)s::timestamptz)
      and video_id in (select video_id from reviews)
    order by user_id, video_id, created_at desc, id desc
),
per_video as (
    select video_id, count(*)::bigint as m, count(*) filter (where liked)::bigint as l
    from swipes
    group by video_id
),
per_level as (
    select rating, video_id, count(*)::bigint as n from reviews group by rating, video_id
    union all
    select null, video_id, count(*)::bigint from reviews group by video_id
),
cells as (
    select p.rating, p.n, coalesce(v.m, 0) as m, coalesce(v.l, 0) as l
    from per_level p left join per_video v using (video_id)
)
select rating,
       sum(n)::bigint as reviews,
       count(*)::bigint as videos,
       count(*) filter (where m > 0)::bigint as clusters,
       sum(m)::bigint as swipes,
       sum(n * m)::numeric as pairs,
       sum(n * l)::numeric as likes,
       sum((n * m)::numeric * (n * m))::numeric as sxx,
       sum((n * m)::numeric * (n * l))::numeric as sxy,
       sum((n * l)::numeric * (n * l))::numeric as syy
from cells
group by rating
order by rating nulls last;

-- query: weight
-- How well one pseudo-label (rating >= like_rating: 1, <= nope_rating: 0, else none) predicts
-- a real user's swipe on the same video, and how well another real user's swipe does: both
-- as a weighted 2x2 table (score x target) and its AUC. The targets are the swipes on videos
-- with at least one decisive review and at least two swipes, the same targets for both; each
-- target weighs 1, split evenly over the video's decisive reviews (pseudo) or over the other
-- users' swipes on the video (real). For a 0/1 score the AUC is (TPR + TNR) / 2.
with reviews as (
    select video_id, rating
    from public.video_reviews
    where %(until)s::timestamptz is null or created_at < %(until)s::timestamptz
),
swipes as (
    select distinct on (user_id, video_id) video_id, decision = 'like' as liked
    from public.user_video_decisions
    where (%(until)s::timestamptz is null or created_at < %(until)s::timestamptz)
      and video_id in (select video_id from reviews)
    order by user_id, video_id, created_at desc, id desc
),
per_video as (
    select video_id, count(*)::float8 as m, count(*) filter (where liked)::float8 as l
    from swipes
    group by video_id
),
decisive as (
    select video_id,
           count(*) filter (where rating >= %(like_rating)s
                              or rating <= %(nope_rating)s)::float8 as nd,
           count(*) filter (where rating >= %(like_rating)s)::float8 as nl
    from reviews
    group by video_id
),
videos as (
    select v.m, v.l, d.nd, d.nl
    from per_video v join decisive d using (video_id)
    where v.m >= 2 and d.nd >= 1
),
tables as (
    select count(*)::bigint as videos,
           coalesce(sum(m), 0)::bigint as targets,
           -- pseudo: score = one decisive review's label, target = a swipe (both 0/1)
           coalesce(sum(l * nl / nd), 0) as p11,
           coalesce(sum(l * (nd - nl) / nd), 0) as p01,
           coalesce(sum((m - l) * nl / nd), 0) as p10,
           coalesce(sum((m - l) * (nd - nl) / nd), 0) as p00,
           -- real: score = another user's swipe on the video
           coalesce(sum(l * (l - 1) / (m - 1)), 0) as r11,
           coalesce(sum(l * (m - l) / (m - 1)), 0) as r01,
           coalesce(sum((m - l) * l / (m - 1)), 0) as r10,
           coalesce(sum((m - l) * (m - l - 1) / (m - 1)), 0) as r00
    from videos
)
select videos, targets, p11, p01, p10, p00, r11, r01, r10, r00,
       0.5 * (p11 / nullif(p11 + p01, 0) + p00 / nullif(p00 + p10, 0)) as auc_pseudo,
       0.5 * (r11 / nullif(r11 + r01, 0) + r00 / nullif(r00 + r10, 0)) as auc_real
from tables;
