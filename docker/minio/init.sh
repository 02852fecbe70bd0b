#!/bin/sh
# The object store's set-up, run by the one-shot minio-init service on every `docker compose up`:
# a bucket per client and an access key per client that can read and write only its own bucket.
# Refit (Airflow tasks, trainer containers) keeps snapshots, runs and reports in REFIT_S3_BUCKET;
# the MLflow server keeps model artifacts in MLFLOW_S3_BUCKET and serves them to its clients, which
# therefore need no key to it. Every step is idempotent, so .env stays the source of the keys.
set -eu

mc alias set store http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

grant_bucket() {
    bucket=$1 access_key=$2 secret_key=$3
    mc mb --ignore-existing "store/$bucket"
    policy_file="/tmp/$bucket-readwrite.json"
    cat >"$policy_file" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$bucket"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$bucket/*"]}
  ]
}
JSON
    mc admin policy create store "$bucket-readwrite" "$policy_file"
    # Adding an existing user sets its secret key, so a key changed in .env takes effect here.
    mc admin user add store "$access_key" "$secret_key"
    # MinIO refuses to attach a policy that is already attached: on a second `up` that refusal
    # is the state we want, anything else is an error.
    if ! output=$(mc admin policy attach store "$bucket-readwrite" --user "$access_key" 2>&1); then
        case $output in
            *"already"*) ;;
            *) echo "$output" >&2; exit 1 ;;
        esac
    fi
}

grant_bucket "$REFIT_S3_BUCKET" "$REFIT_S3_ACCESS_KEY" "$REFIT_S3_SECRET_KEY"
grant_bucket "$MLFLOW_S3_BUCKET" "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY"
echo "buckets $REFIT_S3_BUCKET and $MLFLOW_S3_BUCKET ready"
