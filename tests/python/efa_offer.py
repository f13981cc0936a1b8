#!/usr/bin/env python3
"""Offers a service another Land built to the calling Land's Kommunen, from Python alone.

Nothing here uses EfA Hub's Rust code. Following docs/wire-formats.md ("Offers"), it:

  1. writes the offer JSON (format 1) and checks it against docs/schemas/offer.schema.json;
  2. signs it with the Land's Ed25519 release key (the key file `efa keygen` writes);
  3. checks two refusals first: an offer naming a Kommune of another Land
     (PERMISSION_DENIED) and one with a short signature (INVALID_ARGUMENT);
  4. publishes the offer (CatalogService.PublishOffer) and reads it back (GetOffer): the
     hub must return the exact bytes signed.

    python3 tests/python/efa_offer.py --addr https://127.0.0.1:50051 \\
        --ca efa-data/pki/ca.pem --cert efa-data/pki/land-09.pem --key efa-data/pki/land-09.key \\
        --signing-key land-09.sign --land 09 --service wohngeld-nrw --set fee_cents=0
"""

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
from efa_publish import load_signing_key, validate  # noqa: E402


def parse_args():
    p = connection_args(__doc__, "the offering Land's")
    p.add_argument("--signing-key", required=True, help="the Land's release key file (efa-ed25519-secret:...)")
    p.add_argument("--land", required=True, help="2-digit code of the offering Land, e.g. 09")
    p.add_argument("--service", required=True, help="service id, built by another Land")
    p.add_argument("--channel", default="stable")
    p.add_argument("--from-version", default="0.0.0")
    p.add_argument("--set", action="append", default=[], help="NAME=JSON value of a Land parameter, e.g. fee_cents=0")
    return p.parse_args()


def offer_bytes(args, **extra):
    params = {}
    for item in args.set:
        name, _, value = item.partition("=")
        params[name] = json.loads(value)
    offer = {
        "format": 1,
        "land": args.land,
        "service_id": args.service,
        "channel": args.channel,
        "from_version": args.from_version,
        "land_parameters": params,
        "kommunen": [],
        "issued_at_ms": int(time.time() * 1000),
    }
    offer.update(extra)
    return json.dumps(offer, ensure_ascii=False).encode("utf-8")


def expect_refusal(what, call, code):
    import grpc

    try:
        call()
    except grpc.RpcError as e:
        if e.code() != code:
            raise CheckFailed(f"{what}: expected {code.name}, got {e.code().name}: {e.details()}")
        log(f"{what}: refused with {code.name}: {e.details()}")
        return
    raise CheckFailed(f"{what}: the hub accepted it")


def run(args):
    import grpc

    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proto_dir = args.proto_dir
    signing_key, _ = load_signing_key(args.signing_key)
    offer = offer_bytes(args)
    validate("offer", offer, repo_root)
    foreign = "05913000" if args.land != "05" else "09162000"
    hostile = offer_bytes(args, kommunen=[foreign])
    validate("offer", hostile, repo_root)

    with tempfile.TemporaryDirectory(prefix="efa-pystubs-") as stubs:
        generate_stubs(proto_dir, stubs)
        catalog_pb2 = importlib.import_module("efa.v1.catalog_pb2")
        catalog_grpc = importlib.import_module("efa.v1.catalog_pb2_grpc")
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.cert)
        )
        options = [("grpc.ssl_target_name_override", args.server_name)]
        with grpc.secure_channel(target_of(args.addr), creds, options=options) as channel:
            catalog = catalog_grpc.CatalogServiceStub(channel)
            signed = catalog_pb2.SignedOffer
            expect_refusal(
                f"an offer for Kommune {foreign} of another Land",
                lambda: catalog.PublishOffer(signed(offer=hostile, signature=signing_key.sign(hostile)), timeout=10),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            expect_refusal(
                "a 3-byte signature",
                lambda: catalog.PublishOffer(signed(offer=offer, signature=b"abc"), timeout=10),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            info = catalog.PublishOffer(signed(offer=offer, signature=signing_key.sign(offer)), timeout=10)
            log(
                f"PublishOffer: Land {info.land_code} offers {info.service_id} (built by Land "
                f"{info.building_land_code}) from {info.from_version}, parameters {dict(info.land_parameters)}"
            )
            if info.land_code != args.land or info.withdrawn:
                raise CheckFailed(f"the hub describes the offer as {info}")
            back = catalog.GetOffer(catalog_pb2.GetOfferRequest(service_id=args.service, land_code=args.land), timeout=10)
            if back.offer != offer:
                raise CheckFailed("GetOffer does not return the bytes signed")
            log("GetOffer: the exact bytes signed")


def main():
    modules = ["cryptography", "grpc", "grpc_tools", "jsonschema"]
    return run_main(run, parse_args(), modules, "OK: offered from Python")


if __name__ == "__main__":
    sys.exit(main())
