#!/usr/bin/env python3
"""A plain grpcio client against a running EfA Hub: proof that the API is standard gRPC.

Generates Python stubs from proto/efa/v1/*.proto with grpc_tools.protoc into a temp dir,
connects over mutual TLS with a Kommune client certificate, and then:

  1. checks the standard gRPC health service (grpc.health.v1) reports SERVING;
  2. calls CatalogService.WhoAmI (must be a Kommune) and ListServices (must list --service);
  3. subscribes to --service with UPDATE_POLICY_MANUAL;
  4. reads SubscriptionService.WatchEvents(after_seq=0) until a release_published event for
     --service arrives (optionally of --version), and prints it;
  5. sends what an attacker would (a 1 MB AGS, a 1 MB service id, the largest cursor, an
     unknown enum value) and checks each gets the right code and a short, readable message.

Exit code 0 on success; non-zero with a message on stderr otherwise.

    python3 tests/python/efa_client_check.py --addr https://127.0.0.1:50051 \\
        --ca efa-data/pki/ca.pem --cert efa-data/pki/kommune-05913000.pem \\
        --key efa-data/pki/kommune-05913000.key --service wohngeld-nrw
"""

import argparse
import glob
import importlib
import os
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CheckFailed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def connection_args(doc, whose):
    """An argument parser with what every script here needs to reach the hub as `whose`."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--addr", required=True, help="hub address: https://HOST:PORT or HOST:PORT")
    p.add_argument("--ca", required=True, help="federation CA certificate (PEM)")
    p.add_argument("--cert", required=True, help=f"{whose} client certificate (PEM)")
    p.add_argument("--key", required=True, help=f"{whose} client key (PEM)")
    p.add_argument("--server-name", default="localhost", help="name checked against the hub certificate")
    p.add_argument("--proto-dir", default=os.path.join(REPO_ROOT, "proto"), help="root of the .proto files")
    return p


def parse_args():
    p = connection_args(__doc__, "Kommune")
    p.add_argument("--service", required=True, help="service id expected in the catalog, e.g. wohngeld-nrw")
    p.add_argument("--version", default="", help="if set, the release_published event must be this version")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the event")
    return p.parse_args()


def generate_stubs(proto_dir, out_dir):
    """Runs grpc_tools.protoc on efa/v1/*.proto, exactly as a third-party client would."""
    protos = sorted(os.path.relpath(p, proto_dir) for p in glob.glob(os.path.join(proto_dir, "efa", "v1", "*.proto")))
    if not protos:
        raise CheckFailed(f"no .proto files under {proto_dir}/efa/v1")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"protoc failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}")
    log(f"generated Python stubs for {', '.join(protos)}")
    sys.path.insert(0, out_dir)


def target_of(addr):
    for scheme in ("https://", "http://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme) :]
    return addr.rstrip("/")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check_health(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        raise CheckFailed(f"health check: hub is {status}, expected SERVING")
    log(f"health: {status}")


def expect_refusal(what, call, code, needle):
    """Runs `call`, which must fail with `code`, a message under 1 KiB that contains `needle`."""
    import grpc

    try:
        call()
    except grpc.RpcError as e:
        details = e.details() or ""
        if e.code() != code:
            raise CheckFailed(f"{what}: expected {code.name}, got {e.code().name}: {details[:200]!r}")
        if len(details.encode("utf-8")) > 1024 or needle not in details:
            raise CheckFailed(f"{what}: message of {len(details)} characters lacks {needle!r}: {details[:200]!r}")
        log(f"refused as expected: {what}: {e.code().name}: {details}")
        return
    raise CheckFailed(f"{what}: the hub accepted it")


def check_refusals(channel, catalog, subs, catalog_pb2, common_pb2, subscription_pb2):
    import grpc

    huge = "9" * 1_000_000
    expect_refusal(
        "GetKommune with a 1 MB AGS",
        lambda: catalog.GetKommune(catalog_pb2.GetKommuneRequest(ags=huge), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "1000000 characters",
    )
    expect_refusal(
        "GetService with a 1 MB service id",
        lambda: catalog.GetService(catalog_pb2.GetServiceRequest(id="x" * 1_000_000), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "1000000 characters",
    )
    expect_refusal(
        "Subscribe with an unknown update policy",
        lambda: subs.Subscribe(
            subscription_pb2.SubscribeRequest(
                target=common_pb2.SubscriptionTarget(service_id="wohngeld-nrw"), channel="stable", policy=77
            ),
            timeout=10,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "77",
    )
    # The largest cursor is ahead of any hub's log: the hub says so and how to recover.
    expect_refusal(
        "WatchEvents after the largest cursor",
        lambda: list(subs.WatchEvents(subscription_pb2.WatchEventsRequest(after_seq=2**64 - 1), timeout=10)),
        grpc.StatusCode.OUT_OF_RANGE,
        "resync",
    )


def check_manifest_schema(channel, release):
    """The manifest the hub serves matches docs/schemas/manifest.schema.json."""
    import json

    import jsonschema

    release_pb2 = importlib.import_module("efa.v1.release_pb2")
    release_grpc = importlib.import_module("efa.v1.release_pb2_grpc")
    detail = release_grpc.ReleaseServiceStub(channel).GetRelease(
        release_pb2.GetReleaseRequest(service_id=release.service_id, version=release.version), timeout=10
    )
    with open(os.path.join(REPO_ROOT, "docs", "schemas", "manifest.schema.json")) as f:
        schema = json.load(f)
    try:
        jsonschema.Draft202012Validator(schema).validate(json.loads(detail.manifest))
    except jsonschema.ValidationError as e:
        raise CheckFailed(f"the served manifest does not match docs/schemas/manifest.schema.json: {e.message}")
    log(f"manifest of {release.service_id} {release.version} matches docs/schemas/manifest.schema.json")


def run(args):
    import grpc

    with tempfile.TemporaryDirectory(prefix="efa-pystubs-") as stubs:
        generate_stubs(args.proto_dir, stubs)
        catalog_pb2 = importlib.import_module("efa.v1.catalog_pb2")
        catalog_grpc = importlib.import_module("efa.v1.catalog_pb2_grpc")
        common_pb2 = importlib.import_module("efa.v1.common_pb2")
        subscription_pb2 = importlib.import_module("efa.v1.subscription_pb2")
        subscription_grpc = importlib.import_module("efa.v1.subscription_pb2_grpc")

        creds = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca),
            private_key=read(args.key),
            certificate_chain=read(args.cert),
        )
        target = target_of(args.addr)
        options = [("grpc.ssl_target_name_override", args.server_name)]
        with grpc.secure_channel(target, creds, options=options) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=15)
            except grpc.FutureTimeoutError:
                raise CheckFailed(f"could not connect to {target} (TLS name {args.server_name}) within 15 s")
            log(f"connected to {target} over mTLS")

            check_health(channel)

            catalog = catalog_grpc.CatalogServiceStub(channel)
            me = catalog.WhoAmI(catalog_pb2.WhoAmIRequest(), timeout=10)
            log(f"WhoAmI: role={me.role} key={me.key} name={me.display_name!r}")
            if me.role != "kommune":
                raise CheckFailed(f"WhoAmI says role {me.role!r}; the client certificate must be a Kommune's")

            services = catalog.ListServices(catalog_pb2.ListServicesRequest(), timeout=10).services
            ids = [s.id for s in services]
            log(f"ListServices: {ids}")
            wanted = next((s for s in services if s.id == args.service), None)
            if wanted is None:
                raise CheckFailed(f"service {args.service!r} not in ListServices: {ids}")
            log(
                f"  {wanted.id}: {wanted.title!r} OZG {wanted.ozg_id}, Land {wanted.land_code}, "
                f"Themenfeld {wanted.themenfeld!r}, versions {list(wanted.versions)}"
            )

            subs = subscription_grpc.SubscriptionServiceStub(channel)
            info = subs.Subscribe(
                subscription_pb2.SubscribeRequest(
                    target=common_pb2.SubscriptionTarget(service_id=args.service),
                    channel="stable",
                    policy=common_pb2.UPDATE_POLICY_MANUAL,
                ),
                timeout=10,
            )
            log(
                f"Subscribe: ags={info.ags} service={info.target.service_id} channel={info.channel} "
                f"policy={common_pb2.UpdatePolicy.Name(info.policy)}"
            )
            if info.target.service_id != args.service or info.policy != common_pb2.UPDATE_POLICY_MANUAL:
                raise CheckFailed(f"Subscribe returned an unexpected subscription: {info}")

            check_refusals(channel, catalog, subs, catalog_pb2, common_pb2, subscription_pb2)

            deadline = time.monotonic() + args.timeout
            stream = subs.WatchEvents(subscription_pb2.WatchEventsRequest(after_seq=0), timeout=args.timeout)
            try:
                for event in stream:
                    kind = event.WhichOneof("kind")
                    log(f"event seq={event.seq} kind={kind}")
                    if kind != "release_published":
                        continue
                    r = event.release_published
                    if r.service_id != args.service or (args.version and r.version != args.version):
                        continue
                    log(
                        f"release_published: {r.service_id} {r.version} channel={r.channel} land={r.land_code} "
                        f"files={r.file_count} size={r.total_size} digest={r.content_digest} notes={r.release_notes!r}"
                    )
                    check_manifest_schema(channel, r)
                    return
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise CheckFailed(f"no release_published event for {args.service} within {args.timeout:.0f} s")
                raise
            finally:
                stream.cancel()
            left = deadline - time.monotonic()
            raise CheckFailed(f"WatchEvents ended ({left:.1f} s before the timeout) without a release of {args.service}")


def run_main(run, args, modules, ok_message):
    """Runs `run(args)` as a script: exit 3 if a Python package is missing, 1 for a failed
    check, 2 for an RPC error or anything unexpected, 0 with `ok_message` on success."""
    try:
        for m in modules:
            importlib.import_module(m)
    except ImportError as e:
        print(f"FAIL: {e}; install tests/python/requirements.txt", file=sys.stderr)
        return 3
    try:
        run(args)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # grpc.RpcError and anything unexpected
        import grpc

        if isinstance(e, grpc.RpcError):
            print(f"FAIL: RPC error {e.code().name}: {e.details()}", file=sys.stderr)
        else:
            print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    log(ok_message)
    return 0


def main():
    modules = ["grpc", "grpc_health", "grpc_tools", "jsonschema"]
    return run_main(run, parse_args(), modules, "OK: plain grpcio client talked to the hub")


if __name__ == "__main__":
    sys.exit(main())
