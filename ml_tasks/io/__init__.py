"""Bytes in and out: the artifact store (local folder or S3), the warehouse engines, and Arrow batch streaming."""
