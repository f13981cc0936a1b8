#!/usr/bin/env python3
"""Publishes an EfA release from Python alone: manifest, signature, snapshot and upload.

Nothing here uses EfA Hub's Rust code. It follows docs/wire-formats.md, which is what a
Land's own tooling would do:

  1. walks --bundle, and writes the manifest JSON (format 1): every file with its path,
     size and sha256; files of 1 MiB or more also get a list of chunks (here fixed 1 MiB
     pieces: any split into 1..=1 MiB pieces is valid, FastCDC is what efa uses);
  2. signs the manifest bytes with the Land's Ed25519 release key, read from the key file
     `efa keygen` writes (`efa-ed25519-secret:<base64 32-byte seed>`);
  3. registers the public key with the hub (SetSigningKeys) unless --no-register-key;
  4. streams PublishRelease: a header, then every file's bytes in manifest order;
  5. publishes a signed snapshot naming the new version as the newest on its channel.

Exit code 0 on success; non-zero with a message on stderr otherwise.

    python3 tests/python/efa_publish.py --addr https://127.0.0.1:50051 \\
        --ca efa-data/pki/ca.pem --cert efa-data/pki/land-05.pem --key efa-data/pki/land-05.key \\
        --signing-key efa-data/keys/land-05.sign --land 05 \\
        --service wohngeld-nrw --version 1.0.0 --bundle ./wohngeld
"""

import base64
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from efa_client_check import (  # noqa: E402
    CheckFailed,
    connection_args,
    generate_stubs,
    log,
    read,
    run_main,
    target_of,
)

SECRET_PREFIX = "efa-ed25519-secret:"
PUBLIC_PREFIX = "efa-ed25519-public:"
CHUNKING_THRESHOLD = 1024 * 1024
CHUNK_MAX = 1024 * 1024
DATA_CHUNK = 256 * 1024


def parse_args():
    p = connection_args(__doc__, "the Land's")
    p.add_argument("--signing-key", required=True, help="the Land's release key file (efa-ed25519-secret:...)")
    p.add_argument("--land", required=True, help="2-digit Land code, e.g. 05")
    p.add_argument("--service", required=True, help="service id, e.g. wohngeld-nrw")
    p.add_argument("--version", required=True, help="semantic version, e.g. 1.0.0")
    p.add_argument("--channel", default="stable")
    p.add_argument("--notes", default="", help="release notes")
    p.add_argument("--bundle", required=True, help="directory whose files make the release")
    p.add_argument("--no-register-key", action="store_true", help="do not call SetSigningKeys")
    return p.parse_args()


def load_signing_key(path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    text = read(path).decode("utf-8").strip()
    if not text.startswith(SECRET_PREFIX):
        raise CheckFailed(f"{path} does not start with {SECRET_PREFIX}")
    seed = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    if len(seed) != 32:
        raise CheckFailed(f"{path}: the key is {len(seed)} bytes, expected 32")
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, PUBLIC_PREFIX + base64.b64encode(public).decode("ascii")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_manifest(args):
    """Returns (manifest bytes, [file contents in manifest order])."""
    paths = []
    for root, dirs, files in os.walk(args.bundle):
        dirs.sort()
        for name in files:
            full = os.path.join(root, name)
            paths.append(os.path.relpath(full, args.bundle).replace(os.sep, "/"))
    # Sorted by path as UTF-8 bytes, the order the hub checks.
    paths.sort(key=lambda p: p.encode("utf-8"))
    entries, contents = [], []
    for path in paths:
        data = read(os.path.join(args.bundle, path))
        entry = {"path": path, "size": len(data), "digest": sha256(data)}
        if len(data) >= CHUNKING_THRESHOLD:
            entry["chunks"] = [
                {"size": len(data[i : i + CHUNK_MAX]), "digest": sha256(data[i : i + CHUNK_MAX])}
                for i in range(0, len(data), CHUNK_MAX)
            ]
        entries.append(entry)
        contents.append(data)
    manifest = {
        "format": 1,
        "service_id": args.service,
        "version": args.version,
        "channel": args.channel,
        "land": args.land,
        "created_at_ms": int(time.time() * 1000),
        "files": entries,
    }
    # Any JSON layout is fine: the signature covers these exact bytes, and the hub stores them.
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"), contents


def publish_chunks(release_pb2, manifest, signature, contents, notes="", rollout_plan=None):
    """The PublishRelease stream: the header (with `rollout_plan`, a RolloutPlan, if given),
    then every file's bytes in manifest order, in data chunks."""
    header = release_pb2.PublishHeader(manifest=manifest, signature=signature, release_notes=notes)
    if rollout_plan is not None:
        header.rollout_plan.CopyFrom(rollout_plan)
    yield release_pb2.PublishChunk(header=header)
    for data in contents:
        for i in range(0, len(data), DATA_CHUNK):
            yield release_pb2.PublishChunk(data=data[i : i + DATA_CHUNK])


def validate(kind, data, repo_root):
    """Checks JSON bytes against docs/schemas/<kind>.schema.json before they are signed."""
    import jsonschema

    with open(os.path.join(repo_root, "docs", "schemas", f"{kind}.schema.json")) as f:
        schema = json.load(f)
    try:
        jsonschema.Draft202012Validator(schema).validate(json.loads(data))
    except jsonschema.ValidationError as e:
        raise CheckFailed(f"the {kind} does not match docs/schemas/{kind}.schema.json: {e.message}")


def run(args):
    import grpc

    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proto_dir = args.proto_dir
    signing_key, public_text = load_signing_key(args.signing_key)
    manifest, contents = build_manifest(args)
    validate("manifest", manifest, repo_root)
    signature = signing_key.sign(manifest)
    log(f"manifest: {len(contents)} files, {sum(map(len, contents))} bytes, content digest {sha256(manifest)}")

    with tempfile.TemporaryDirectory(prefix="efa-pystubs-") as stubs:
        generate_stubs(proto_dir, stubs)
        catalog_pb2 = importlib.import_module("efa.v1.catalog_pb2")
        catalog_grpc = importlib.import_module("efa.v1.catalog_pb2_grpc")
        release_pb2 = importlib.import_module("efa.v1.release_pb2")
        release_grpc = importlib.import_module("efa.v1.release_pb2_grpc")

        creds = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.cert)
        )
        options = [("grpc.ssl_target_name_override", args.server_name)]
        with grpc.secure_channel(target_of(args.addr), creds, options=options) as channel:
            if not args.no_register_key:
                keys = catalog_grpc.CatalogServiceStub(channel).SetSigningKeys(
                    catalog_pb2.SetSigningKeysRequest(keys=[public_text]), timeout=10
                )
                log(f"SetSigningKeys: Land {keys.land_code} registered {list(keys.keys)}")

            releases = release_grpc.ReleaseServiceStub(channel)
            info = releases.PublishRelease(
                publish_chunks(release_pb2, manifest, signature, contents, args.notes), timeout=60
            )
            log(
                f"PublishRelease: {info.service_id} {info.version} channel={info.channel} land={info.land_code} "
                f"files={info.file_count} size={info.total_size} digest={info.content_digest}"
            )
            if info.content_digest != sha256(manifest):
                raise CheckFailed(f"the hub names content digest {info.content_digest}, expected {sha256(manifest)}")

            now = int(time.time() * 1000)
            snapshot = json.dumps(
                {
                    "format": 1,
                    "land": args.land,
                    "issued_at_ms": now,
                    "expires_at_ms": now + 24 * 3600 * 1000,
                    "latest": {args.service: {args.channel: args.version}},
                }
            ).encode("utf-8")
            validate("snapshot", snapshot, repo_root)
            snap = releases.PublishSnapshot(
                release_pb2.SignedSnapshot(snapshot=snapshot, signature=signing_key.sign(snapshot)), timeout=10
            )
            log(f"PublishSnapshot: Land {snap.land_code}, {snap.services} services, expires {snap.expires_at_ms}")


def main():
    modules = ["cryptography", "grpc", "grpc_tools", "jsonschema"]
    return run_main(run, parse_args(), modules, "OK: published from Python")


if __name__ == "__main__":
    sys.exit(main())
