"""The S3 client's own timestamp parser gives what botocore's general one gives, on every format S3 sends
and on what it does not, and the client built with it reads the same Last-Modified from a real endpoint."""

from __future__ import annotations

import datetime

import pytest
from botocore.utils import parse_timestamp as botocore_parse

from clusterops import s3 as s3mod
from clusterops.config import S3Section


@pytest.mark.parametrize(
    "value",
    [
        "Sat, 28 Nov 2026 12:00:00 GMT",  # a header (RFC 7231)
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "2026-11-28T12:00:00.000Z",  # an XML body (ISO 8601)
        "2026-11-28T12:00:00Z",
        "2026-11-28T12:00:00.123456+02:00",
        "1700000000",  # epoch seconds, as a string
        1700000000,
        "2026-11-28T12:00:00",  # no zone: botocore's parser decides
        "Sat, 28 Nov 2026 12:00:00 +0100",
    ],
)
def test_parse_timestamp_agrees_with_botocore(value):
    ours, theirs = s3mod.parse_timestamp(value), botocore_parse(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()


def test_parse_timestamp_rejects_what_botocore_rejects():
    with pytest.raises(ValueError):
        s3mod.parse_timestamp("not a date")


def test_client_reads_last_modified_as_an_aware_utc_time(s3_endpoint, s3):
    ours = s3mod.client(S3Section(endpoint_url=s3_endpoint))
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    ours.put_object(Bucket="test", Key="k", Body=b"x")
    head = ours.head_object(Bucket="test", Key="k")["LastModified"]
    listed = ours.list_objects_v2(Bucket="test")["Contents"][0]["LastModified"]
    reference = s3.head_object(Bucket="test", Key="k")["LastModified"]  # boto3's client, dateutil
    assert head == listed.replace(microsecond=0) == reference.replace(microsecond=0)
    assert head.utcoffset() == datetime.timedelta(0)
    assert head >= before - datetime.timedelta(seconds=5)
