"""Checkpoints: the local layout and its manifest, push to / pull from S3, status, retention, sync."""
