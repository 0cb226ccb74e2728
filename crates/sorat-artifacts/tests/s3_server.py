"""A real S3-compatible server for tests/s3.rs: moto's (installed by .ci/s3).

Usage: python3 s3_server.py [--check-signatures] BUCKET...

Serves S3 on 127.0.0.1 at a free port with the given buckets, prints one line,
`ready <port> <access key id> <secret access key>`, then serves until its standard input
closes: when the test that started it drops it, or dies.

By default, as moto does, any credentials are taken. With --check-signatures every request
is checked as AWS does, against the key of one IAM user allowed `s3:*` (the one printed):
an unknown access key or a wrong signature is refused. moto's check miscomputes the
signature of a request whose path or query holds a percent-encoded character (a listing
under a prefix, a `+` in a key) and refuses it, so only the credentials test turns it on.
"""

import json
import logging
import os
import sys

try:
    import boto3
    from moto import settings
    from moto.server import ThreadedMotoServer
except ImportError as error:
    print(f"moto's S3 server is not installed ({error}): run .ci/s3", file=sys.stderr)
    sys.exit(3)

logging.getLogger("werkzeug").setLevel(logging.WARNING)
check_signatures = "--check-signatures" in sys.argv[1:]
buckets = [arg for arg in sys.argv[1:] if arg != "--check-signatures"]

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
_, port = server.get_host_and_port()

# Set up before any check is on: the user, its key, the buckets.
session = boto3.session.Session(
    aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1"
)
endpoint = f"http://127.0.0.1:{port}"
iam = session.client("iam", endpoint_url=endpoint)
iam.create_user(UserName="sorat")
iam.put_user_policy(
    UserName="sorat",
    PolicyName="s3",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
    ),
)
key = iam.create_access_key(UserName="sorat")["AccessKey"]
s3 = session.client("s3", endpoint_url=endpoint)
for bucket in buckets:
    s3.create_bucket(Bucket=bucket)

if check_signatures:
    # From here on every request must be signed with that key.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
print(f"ready {port} {key['AccessKeyId']} {key['SecretAccessKey']}", flush=True)
sys.stdin.read()
os._exit(0)
