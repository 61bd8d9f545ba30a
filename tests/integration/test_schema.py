"""The schema on a real embedded PostgreSQL: migrations, table contracts, constraints, RLS."""

import json
import uuid

import psycopg2
import pytest

from swiperec.db import connect
from swiperec.db.migrate import list_migrations, migrate, migration_states

pytestmark = pytest.mark.integration

USER_A = str(uuid.UUID(int=1))
USER_B = str(uuid.UUID(int=2))


def test_migrations_apply_twice_and_are_recorded_like_the_supabase_cli(conn):
    assert migrate(conn, local_bootstrap=True) == []  # the template already applied them
    # The SQL itself is also safe to run again (e.g. after a partial manual apply).
    for migration in list_migrations():
        with conn.cursor() as cur:
            cur.execute(migration.sql)
        conn.commit()
    with conn.cursor() as cur:
        cur.execute("select version, name from supabase_migrations.schema_migrations")
        recorded = cur.fetchall()
    assert recorded == [(m.version, m.name) for m in list_migrations()]
    assert all(s.applied and not s.edited_since_applied for s in migration_states(conn))


def test_migrating_a_fresh_database_applies_everything_once(pg_server):
    admin = psycopg2.connect(pg_server.status().url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("drop database if exists fresh_migrate")
        cur.execute("create database fresh_migrate")
    url = pg_server.status().url.rsplit("/", 1)[0] + "/fresh_migrate"
    fresh = connect(url)
    with pytest.raises(RuntimeError, match="--auth-stand-in"):
        migrate(fresh)  # no Supabase auth schema here and no stand-in asked for
    assert [m.version for m in migrate(fresh, local_bootstrap=True)] == [
        m.version for m in list_migrations()
    ]
    assert migrate(fresh, local_bootstrap=True) == []
    fresh.close()
    with admin.cursor() as cur:
        cur.execute("drop database fresh_migrate with (force)")
    admin.close()


def test_badly_named_migration_file_is_refused(tmp_path):
    (tmp_path / "001_init.sql").write_text("select 1;")
    with pytest.raises(ValueError, match="YYYYMMDDHHMMSS"):
        list_migrations(tmp_path)


EXPECTED_COLUMNS = {
    "videos": {
        "id": "bigint",
        "external_id": "text",
        "title": "text",
        "description": "text",
        "genres": "ARRAY",
        "maker": "text",
        "label": "text",
        "series": "text",
        "performers": "ARRAY",
        "release_date": "date",
        "duration_sec": "integer",
        "thumbnail_url": "text",
        "created_at": "timestamp with time zone",
    },
    "video_reviews": {
        "reviewer_id": "text",
        "video_id": "bigint",
        "rating": "smallint",
        "created_at": "timestamp with time zone",
    },
    "user_video_decisions": {
        "id": "bigint",
        "user_id": "uuid",
        "video_id": "bigint",
        "decision": "text",
        "created_at": "timestamp with time zone",
    },
    "video_embeddings": {
        "model_version": "text",
        "video_id": "bigint",
        "embedding": "USER-DEFINED",
        "updated_at": "timestamp with time zone",
        "rank_bias": "real",  # the ranking stage's terms (null: rank by the cosine)
        "rank_scale": "real",
    },
    "user_embeddings": {
        "model_version": "text",
        "user_id": "uuid",
        "embedding": "USER-DEFINED",
        "updated_at": "timestamp with time zone",
    },
}


@pytest.mark.parametrize("table", sorted(EXPECTED_COLUMNS))
def test_table_contract(conn, table):
    with conn.cursor() as cur:
        cur.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = 'public' and table_name = %s",
            (table,),
        )
        assert dict(cur.fetchall()) == EXPECTED_COLUMNS[table]


def test_embeddings_are_vector_768(conn):
    with conn.cursor() as cur:
        cur.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = 'public.video_embeddings'::regclass and attname = 'embedding'"
        )
        assert cur.fetchone()[0] == "vector(768)"
        cur.execute("select swiperec_private.embedding_partition('video', 't')")
        cur.execute(
            "insert into public.video_embeddings (model_version, video_id, embedding)"
            " values ('t', 1, %s)",
            (json.dumps([0.0] * 768),),
        )
        with pytest.raises(psycopg2.errors.DataException, match="expected 768 dimensions"):
            cur.execute(
                "insert into public.video_embeddings (model_version, video_id, embedding)"
                " values ('t', 2, '[1,2,3]')"
            )
    conn.rollback()


def _insert_video(cur, external_id="v1", title="初恋の放課後"):
    cur.execute(
        "insert into public.videos (external_id, title, genres) values (%s, %s, %s) returning id",
        (external_id, title, ["恋愛"]),
    )
    return cur.fetchone()[0]


def test_constraints_reject_bad_values(conn):
    with conn.cursor() as cur:
        video = _insert_video(cur)
        conn.commit()
        bad = [
            ("insert into public.videos (external_id, title) values ('v2', '  ')", "check"),
            ("insert into public.videos (external_id, title) values ('v1', 'again')", "unique"),
            (f"insert into public.video_reviews values ('r1', {video}, 6, now())", "check"),
            (
                f"insert into public.user_video_decisions (user_id, video_id, decision)"
                f" values ('{USER_A}', {video}, 'maybe')",
                "check",
            ),
            (
                f"insert into public.user_video_decisions (user_id, video_id, decision)"
                f" values ('{USER_A}', 999999, 'like')",
                "foreign key",
            ),
        ]
        for statement, kind in bad:
            with pytest.raises(psycopg2.IntegrityError, match=kind):
                cur.execute(statement)
            conn.rollback()


def test_repeated_swipes_are_kept_and_the_latest_one_counts(conn):
    with conn.cursor() as cur:
        video = _insert_video(cur)
        insert = (
            "insert into public.user_video_decisions (user_id, video_id, decision, created_at)"
            " values (%s, %s, %s, %s)"
        )
        cur.execute(insert, (USER_A, video, "nope", "2026-01-01T00:00:00Z"))
        cur.execute(insert, (USER_A, video, "like", "2026-02-01T00:00:00Z"))
        cur.execute("select count(*) from public.user_video_decisions")
        assert cur.fetchone()[0] == 2
        cur.execute("select decision from public.user_video_latest_decisions")
        assert cur.fetchall() == [("like",)]
        with pytest.raises(psycopg2.errors.UniqueViolation):
            cur.execute(insert, (USER_A, video, "like", "2026-02-01T00:00:00Z"))
    conn.rollback()


def _as_user(cur, user_id):
    cur.execute("set local role authenticated")
    cur.execute(
        "select set_config('request.jwt.claims', %s, true)",
        (json.dumps({"sub": user_id, "role": "authenticated"}),),
    )


def test_row_level_security_keeps_users_to_their_own_rows(conn):
    with conn.cursor() as cur:
        video = _insert_video(cur)
        for user in (USER_A, USER_B):
            cur.execute(
                "insert into public.user_video_decisions (user_id, video_id, decision)"
                " values (%s, %s, 'like')",
                (user, video),
            )
        cur.execute("select swiperec_private.embedding_partition('user', 't')")
        partition = cur.fetchone()[0]
        for user in (USER_A, USER_B):
            cur.execute(
                "insert into public.user_embeddings (model_version, user_id, embedding)"
                " values ('t', %s, %s)",
                (user, json.dumps([0.1] * 768)),
            )
        cur.execute(f"insert into public.video_reviews values ('r1', {video}, 5, now())")
        conn.commit()

        _as_user(cur, USER_A)
        cur.execute("select distinct user_id::text from public.user_video_decisions")
        assert cur.fetchall() == [(USER_A,)]
        cur.execute("select user_id::text from public.user_video_latest_decisions")
        assert cur.fetchall() == [(USER_A,)]
        cur.execute("select user_id::text from public.user_embeddings")
        assert cur.fetchall() == [(USER_A,)]
        cur.execute("select count(*) from public.videos")
        assert cur.fetchone()[0] == 1
        cur.execute("savepoint before_reviews")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):  # reviews: service only
            cur.execute("select count(*) from public.video_reviews")
        cur.execute("rollback to savepoint before_reviews")
        # The app sends only the video and the answer; who and when come from the JWT and clock.
        cur.execute(
            "insert into public.user_video_decisions (video_id, decision) values (%s, 'nope')"
            " returning user_id::text",
            (video,),
        )
        assert cur.fetchone() == (USER_A,)
        cur.execute("savepoint before_denials")
        denied = [
            (
                "insert into public.user_video_decisions (user_id, video_id, decision)"
                f" values ('{USER_B}', {video}, 'nope')",
                "permission denied",
            ),
            (
                "insert into public.user_video_decisions (video_id, decision, created_at)"
                f" values ({video}, 'like', '2099-01-01')",
                "permission denied",
            ),
            (f"select * from {partition}", "permission denied for schema swiperec_private"),
            ("delete from public.user_video_decisions", "permission denied"),
            ("update public.user_embeddings set embedding = embedding", "permission denied"),
            ("truncate public.user_video_decisions", "permission denied"),
            ("select nextval('public.videos_id_seq')", "permission denied"),
            ("select swiperec_private.embedding_partition('user', 'x')", "permission denied"),
        ]
        for statement, message in denied:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege, match=message):
                cur.execute(statement)
            cur.execute("rollback to savepoint before_denials")
        conn.rollback()

        cur.execute("set local role anon")
        cur.execute("select count(*) from public.videos")
        assert cur.fetchone()[0] == 1
        cur.execute("savepoint anon_denials")
        for statement in (
            "select count(*) from public.user_video_decisions",
            "select count(*) from public.user_embeddings",
            f"select count(*) from {partition}",
            "insert into public.user_video_decisions (video_id, decision)"
            f" values ({video}, 'like')",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
            cur.execute("rollback to savepoint anon_denials")
    conn.rollback()


def test_import_bookkeeping_refuses_counts_that_do_not_add_up(conn):
    with conn.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute(
            "insert into public.data_imports"
            " (kind, source, rows_read, inserted, updated, unchanged, rejected)"
            " values ('videos', 'x.csv', 10, 5, 0, 0, 4)"
        )
    conn.rollback()
