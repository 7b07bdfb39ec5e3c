-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d),
-- as POSTGRES_USER: the Prefect server's database, beside the app database `svrctl`
-- (POSTGRES_DB). Prefect and svrctl both keep an `alembic_version` table, so they
-- need a database each.
CREATE DATABASE prefect;
