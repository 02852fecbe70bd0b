#!/bin/bash
# Creates one database and one login role per client of the deployed stack's PostgreSQL server:
# Airflow's metadata, MLflow's tracking/registry store and its auth store, and the demo warehouse.
# Each role can connect only to its own databases, so a leaked Airflow password does not expose
# the model registry, and MLflow never shares Airflow's database.
#
# The postgres image runs this once, when the data volume is empty. Changing a password in .env
# afterwards needs `ALTER ROLE … PASSWORD …` by hand (or `docker compose down -v`, losing data).
set -euo pipefail

# psql's :'var' and :"var" quote a literal and an identifier, so passwords are never spliced into SQL.
create_role_and_databases() {
    local role=$1 password=$2
    shift 2
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$role" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
    local database
    for database in "$@"; do
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -v role="$role" -v database="$database" <<'SQL'
CREATE DATABASE :"database" OWNER :"role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
SQL
    done
}

create_role_and_databases airflow "$AIRFLOW_DB_PASSWORD" airflow
create_role_and_databases mlflow "$MLFLOW_DB_PASSWORD" mlflow mlflow_auth
create_role_and_databases warehouse "$WAREHOUSE_DB_PASSWORD" warehouse
