#!/bin/sh
# Starts the MLflow tracking server with basic authentication (`--app-name basic-auth`).
#
# MLflow reads the auth store's location only from the ini file at MLFLOW_AUTH_CONFIG_PATH, and
# that location holds a password, so the file is written here, at start, from the environment,
# readable only by this user and never part of the image. Everything else comes from variables
# `mlflow server` reads itself (MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION,
# MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY, …).
set -eu

: "${MLFLOW_AUTH_DATABASE_URI:?MLFLOW_AUTH_DATABASE_URI is not set: the auth store's SQLAlchemy URL}"
: "${MLFLOW_AUTH_CONFIG_PATH:?MLFLOW_AUTH_CONFIG_PATH is not set: where to write the auth ini}"

umask 077
mkdir -p "$(dirname "$MLFLOW_AUTH_CONFIG_PATH")"
# configparser reads '%' as interpolation; a percent-encoded password must reach it as '%%'.
auth_database_uri=$(printf '%s' "$MLFLOW_AUTH_DATABASE_URI" | sed 's/%/%%/g')
cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
# Accounts the admin creates for reviewers can read every experiment and model without a grant
# per resource; writing stays with the admin account Refit uses.
default_permission = READ
database_uri = $auth_database_uri
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

exec mlflow server --app-name basic-auth "$@"
