"""Stand-in ``timescaledb`` extensions for one test database of the real embedded PostgreSQL.

TimescaleDB cannot be installed here, so these exercise how the hub *reacts* to TimescaleDB faults; they say
nothing about TimescaleDB itself. Each is a control file and an SQL script in a directory of the test's own,
made visible to that database only through PostgreSQL 18's ``extension_control_path`` (set per database), so the
shared server and the other tests' databases never see it.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

# TimescaleDB installed but not preloaded answers CREATE EXTENSION with a FATAL that closes the connection;
# terminating its own backend closes the connection the same way.
CLOSES_ITS_CONNECTION = "SELECT pg_terminate_backend(pg_backend_pid());\n"

# As above, and every other connection to the database goes too (the hub's set-up connection among them).
CLOSES_EVERY_CONNECTION = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid();\n" + CLOSES_ITS_CONNECTION)

# An Apache-only build: hypertables (here a plain table) and drop_chunks work, the licensed features are refused
# (a real build says: functionality not supported under the current "apache" license).
_REFUSED = """
CREATE FUNCTION {name}({args}) RETURNS {returns} LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'functionality not supported under the current "apache" license'
        USING ERRCODE = 'feature_not_supported';
END $$;
"""
APACHE_ONLY = "\n".join([
    "CREATE FUNCTION create_hypertable(relation regclass, time_column_name name, chunk_time_interval bigint) "
    "RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$;",
    "CREATE FUNCTION set_integer_now_func(hypertable regclass, integer_now_func regproc) "
    "RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$;",
    # Here it deletes rows (a real one drops whole chunks): what the test checks is that the hub calls it.
    """CREATE FUNCTION drop_chunks(relation regclass, older_than bigint) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    EXECUTE format('DELETE FROM %s WHERE ts < %s', relation, older_than);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN RETURN NEXT format('%s rows of %s', n, relation); END IF;
END $$;""",
    "CREATE SCHEMA timescaledb_information;",
    "CREATE VIEW timescaledb_information.jobs AS SELECT NULL::name AS proc_name, NULL::jsonb AS config, "
    "NULL::name AS hypertable_name WHERE false;",
    "CREATE VIEW timescaledb_information.hypertables AS SELECT 'fixes'::name AS hypertable_name, "
    "false AS compression_enabled;",
    _REFUSED.format(name="add_compression_policy", args="hypertable regclass, compress_after bigint",
                    returns="integer"),
    _REFUSED.format(name="remove_compression_policy", args="hypertable regclass, if_exists boolean = false",
                    returns="boolean"),
    _REFUSED.format(name="add_retention_policy", args="relation regclass, drop_after bigint", returns="integer"),
    _REFUSED.format(name="remove_retention_policy", args="relation regclass, if_exists boolean = false",
                    returns="void"),
])


def install(database_url: str, folder: Path, script: str) -> None:
    """Make ``script`` the ``timescaledb`` extension of the database at ``database_url`` (only that one)."""
    extension = folder / "extension"
    extension.mkdir(parents=True, exist_ok=True)
    (extension / "timescaledb.control").write_text(
        "comment = 'stand-in for tests'\ndefault_version = '2.99.0'\nrelocatable = false\nsuperuser = true\n")
    (extension / "timescaledb--2.99.0.sql").write_text(script)
    # The server runs as its own system user; pytest's tmp_path is private to root.
    for path in (folder.parent, folder, extension):
        path.chmod(0o755)
    dbname = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {dbname} SET extension_control_path = '$system:{folder}'")
