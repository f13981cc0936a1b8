#!/usr/bin/env python3
"""Rollout rings, deprecation and recall from Python alone, against a running EfA Hub.

Nothing here uses EfA Hub's Rust code: stubs come from proto/ (grpc_tools.protoc), the
release is written and signed as efa_publish.py does it (docs/wire-formats.md). With the
building Land's certificate (--cert/--key) and those of a pilot Kommune, a Kommune of the
same Land outside the pilot ring, an operator and another Land, it:

  1. publishes --version with a rollout plan in the PublishHeader: one ring "Pilot" with
     the pilot Kommune, gates min_healthy 1 and min_ratings 1;
  2. reads the rollout: GetRolloutStatus as the operator (running, ring 0 open, rings
     ["Pilot", "alle übrigen"], verdict "wait: ..."), and the release as each Kommune
     (GetRelease and ListReleases): the pilot is admitted, the other one is scheduled for
     ring 2 (alle übrigen);
  3. publishes --plain-version with hostile plans in the header (11 rings, a ring name of
     10,000 characters, a share of 101 percent): each is refused with INVALID_ARGUMENT while
     the content is still held back, and leaves no release behind; then publishes it
     without a plan;
  4. checks refusals of SetRolloutPlan, ActOnRollout and GetRolloutStatus: the right code
     and a short message (under 1 KiB) for a Kommune, another Land, malformed and enormous
     plans, a second plan, an unspecified action, a pause without reason, no plan;
  5. promotes the rollout as the Land: complete, and the outside Kommune is admitted;
  6. deprecates the service (refused for another Land, for a successor that does not
     exist, without a reason) naming --successor, and recalls --version (YankRelease with
     recall): ServiceInfo.deprecated and ReleaseInfo.recalled are set, for Kommunen too.

Exit code 0 on success; non-zero with a message on stderr otherwise.

    python3 tests/python/efa_rollout.py --addr https://127.0.0.1:50051 \\
        --ca pki/ca.pem --cert pki/land-05.pem --key pki/land-05.key \\
        --signing-key keys/land-05.sign --land 05 --service wohngeld-nrw --version 1.1.0 \\
        --plain-version 1.2.0 --bundle ./wohngeld --successor wohngeld-plus \\
        --pilot-cert pki/kommune-05913000.pem --pilot-key pki/kommune-05913000.key \\
        --outside-cert pki/kommune-05113000.pem --outside-key pki/kommune-05113000.key \\
        --operator-cert pki/operator-bund.pem --operator-key pki/operator-bund.key \\
        --other-land-cert pki/land-09.pem --other-land-key pki/land-09.key
"""

import contextlib
import copy
import importlib
import os
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from efa_client_check import (  # noqa: E402
    CheckFailed,
    connection_args,
    expect_refusal,
    generate_stubs,
    log,
    read,
    run_main,
    target_of,
)
from efa_publish import build_manifest, load_signing_key, publish_chunks, sha256, validate  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PILOT = "Pilot"
LAST_RING = "alle übrigen"
# How long a refused publish may take to be answered while its content is held back.
REFUSAL_SECS = 15


def parse_args():
    p = connection_args(__doc__, "the building Land's")
    p.add_argument("--signing-key", required=True, help="the Land's release key file (efa-ed25519-secret:...)")
    p.add_argument("--land", required=True, help="2-digit code of the building Land, e.g. 05")
    p.add_argument("--service", required=True, help="the Land's registered service, e.g. wohngeld-nrw")
    p.add_argument("--version", required=True, help="version published with a rollout plan, e.g. 1.1.0")
    p.add_argument("--plain-version", required=True, help="version published without a plan, e.g. 1.2.0")
    p.add_argument("--channel", default="stable")
    p.add_argument("--bundle", required=True, help="directory whose files make the releases")
    p.add_argument("--successor", default="", help="an existing service named as the successor")
    for who, what in [
        ("pilot", "a Kommune of the Land, the pilot ring"),
        ("outside", "a Kommune of the Land outside the pilot ring"),
        ("operator", "an operator"),
        ("other-land", "another Land"),
    ]:
        p.add_argument(f"--{who}-cert", required=True, help=f"client certificate of {what} (PEM)")
        p.add_argument(f"--{who}-key", required=True, help=f"client key of {what} (PEM)")
    return p.parse_args()


class Hub:
    """Stubs of one identity's connection."""

    def __init__(self, channel, name):
        self.name = name
        self.catalog = importlib.import_module("efa.v1.catalog_pb2_grpc").CatalogServiceStub(channel)
        self.releases = importlib.import_module("efa.v1.release_pb2_grpc").ReleaseServiceStub(channel)
        self.rollouts = importlib.import_module("efa.v1.rollout_pb2_grpc").RolloutServiceStub(channel)
        self.key = ""


def connect(stack, args, cert, key, name, role):
    """A channel as the identity of `cert`; checks with WhoAmI that the hub sees `role`."""
    import grpc

    catalog_pb2 = importlib.import_module("efa.v1.catalog_pb2")
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(key), certificate_chain=read(cert)
    )
    options = [("grpc.ssl_target_name_override", args.server_name)]
    channel = stack.enter_context(grpc.secure_channel(target_of(args.addr), creds, options=options))
    hub = Hub(channel, name)
    me = hub.catalog.WhoAmI(catalog_pb2.WhoAmIRequest(), timeout=10)
    log(f"{name}: WhoAmI role={me.role} key={me.key} name={me.display_name!r}")
    if me.role != role:
        raise CheckFailed(f"{name}: WhoAmI says role {me.role!r}, expected {role!r}")
    hub.key = me.key
    return hub


def expect(what, got, wanted):
    if got != wanted:
        raise CheckFailed(f"{what}: got {got!r}, expected {wanted!r}")


def pilot_plan(pb, ags):
    return pb.RolloutPlan(
        rings=[pb.RolloutRing(name=PILOT, kommunen=[ags])],
        gates=pb.RolloutGates(min_healthy=1, min_ratings=1),
    )


def release_of(args, version):
    """(manifest, signature, contents) of `version` of --bundle, signed with the Land's key."""
    spec = copy.copy(args)
    spec.version = version
    manifest, contents = build_manifest(spec)
    validate("manifest", manifest, REPO_ROOT)
    signing_key, _ = load_signing_key(args.signing_key)
    return manifest, signing_key.sign(manifest), contents


def publish_with_plan(args, land, release_pb2, rollout_pb2, pilot_ags):
    """Step 1: the release and its plan in one publish."""
    catalog_pb2 = importlib.import_module("efa.v1.catalog_pb2")
    _, public_text = load_signing_key(args.signing_key)
    keys = land.catalog.SetSigningKeys(catalog_pb2.SetSigningKeysRequest(keys=[public_text]), timeout=10)
    log(f"SetSigningKeys: Land {keys.land_code} registered {list(keys.keys)}")
    manifest, signature, contents = release_of(args, args.version)
    plan = pilot_plan(rollout_pb2, pilot_ags)
    info = land.releases.PublishRelease(
        publish_chunks(release_pb2, manifest, signature, contents, "mit Pilotring", plan), timeout=60
    )
    log(
        f"PublishRelease with a plan: {info.service_id} {info.version} files={info.file_count} "
        f"digest={info.content_digest}"
    )
    expect("published version", (info.service_id, info.version), (args.service, args.version))
    expect("content digest", info.content_digest, sha256(manifest))


def check_running(args, land, operator, pilot, outside, release_pb2, rollout_pb2):
    """Step 2: the plan stored with the release, as the operator and each Kommune see it."""
    status = operator.rollouts.GetRolloutStatus(
        rollout_pb2.GetRolloutStatusRequest(service_id=args.service, version=args.version), timeout=10
    )
    log(
        f"GetRolloutStatus as {operator.name}: state={status.state} open_ring={status.open_ring} "
        f"rings={[r.name for r in status.rings]} verdict={status.verdict!r}"
    )
    expect("rollout state", (status.state, status.open_ring), ("running", 0))
    expect("ring names", [r.name for r in status.rings], [PILOT, LAST_RING])
    expect("open rings", [r.open for r in status.rings], [True, False])
    if not status.verdict.startswith("wait:"):
        raise CheckFailed(f"the verdict of a fresh rollout is {status.verdict!r}, expected 'wait: ...'")
    expect("stored plan's pilot ring", list(status.plan.rings[0].kommunen), [pilot.key])
    gates = status.plan.gates
    expect("stored plan's gates", (gates.min_healthy, gates.min_ratings), (1, 1))
    if not status.gates or any(g.state not in ("met", "waiting", "failed") for g in status.gates):
        raise CheckFailed(f"the open ring's gates: {list(status.gates)}")
    for g in status.gates:
        log(f"  gate {g.gate!r}: {g.value} of {g.threshold} ({g.state})")

    expect_position(args, pilot, release_pb2, ring=0, name=PILOT, admitted=True, note="")
    expect_position(
        args, outside, release_pb2, ring=1, name=LAST_RING, admitted=False, note="scheduled for ring 2 (alle übrigen)"
    )
    # The Land reads the release without a Kommune's position.
    request = release_pb2.GetReleaseRequest(service_id=args.service, version=args.version)
    info = land.releases.GetRelease(request, timeout=10).info
    log(f"GetRelease as {land.name}: rollout set={info.HasField('rollout')}")


def expect_position(args, kommune, release_pb2, ring, name, admitted, note):
    """GetRelease and ListReleases show Kommune `kommune` its position in the rollout."""
    detail = kommune.releases.GetRelease(
        release_pb2.GetReleaseRequest(service_id=args.service, version=args.version), timeout=10
    )
    listed = kommune.releases.ListReleases(release_pb2.ListReleasesRequest(service_id=args.service), timeout=10)
    entry = next((r for r in listed.releases if r.version == args.version), None)
    if entry is None:
        versions = [r.version for r in listed.releases]
        raise CheckFailed(f"ListReleases as {kommune.name} lacks {args.version}: {versions}")
    for how, info in [("GetRelease", detail.info), ("ListReleases", entry)]:
        if not info.HasField("rollout"):
            raise CheckFailed(f"{how} as {kommune.name}: no rollout position")
        p = info.rollout
        log(f"{how} as {kommune.name}: ring={p.ring} {p.ring_name!r} admitted={p.admitted} note={p.note!r}")
        got = (p.ring, p.ring_name, p.admitted, p.note)
        expect(f"{how} as {kommune.name}: position", got, (ring, name, admitted, note))


class HeldBack:
    """A publish stream that sends the header, then holds the content back until `release`
    is set: a refusal that arrives meanwhile came before any content."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.release = threading.Event()

    def __iter__(self):
        yield next(self.chunks)
        self.release.wait(REFUSAL_SECS * 2)
        yield from self.chunks


def refused_publish(what, land, release_pb2, manifest, signature, contents, plan, needle, hold_back=True):
    """A publish whose header carries `plan` must be refused with INVALID_ARGUMENT, with a
    message under 1 KiB that contains `needle`; with `hold_back` before any content is sent."""
    import grpc

    stream = HeldBack(publish_chunks(release_pb2, manifest, signature, contents, "", plan))
    if not hold_back:
        stream.release.set()
    future = land.releases.PublishRelease.future(iter(stream), timeout=60)
    try:
        try:
            future.result(timeout=REFUSAL_SECS)
        except grpc.FutureTimeoutError:
            future.cancel()
            raise CheckFailed(f"{what}: no answer within {REFUSAL_SECS} s while the content is held back")
        except grpc.RpcError:
            pass
    finally:
        stream.release.set()
    expect_refusal(what, future.result, grpc.StatusCode.INVALID_ARGUMENT, needle)


def check_refused_publishes(args, land, release_pb2, rollout_pb2, pilot_ags):
    """Step 3: a bad plan in the header is refused before content and leaves nothing."""
    manifest, signature, contents = release_of(args, args.plain_version)
    rb = rollout_pb2
    gates = rb.RolloutGates(min_healthy=1)
    eleven = rb.RolloutPlan(rings=[rb.RolloutRing(name=f"Ring {i}", share_percent=1) for i in range(11)], gates=gates)
    long_name = rb.RolloutPlan(rings=[rb.RolloutRing(name="R" * 10_000, kommunen=[pilot_ags])], gates=gates)
    too_much = rb.RolloutPlan(rings=[rb.RolloutRing(name="Alle", share_percent=101)], gates=gates)
    release = (release_pb2, manifest, signature, contents)
    what = f"PublishRelease {args.plain_version}"
    refused_publish(f"{what} with 11 rings", land, *release, eleven, "10 rings")
    refused_publish(f"{what} with a ring name of 10,000 characters", land, *release, long_name, "64")
    # Also when the client streams everything at once.
    refused_publish(
        f"{what} with a share of 101 percent, content streamed", land, *release, too_much, "percent", hold_back=False
    )

    import grpc

    listed = land.releases.ListReleases(release_pb2.ListReleasesRequest(service_id=args.service), timeout=10)
    versions = [r.version for r in listed.releases]
    log(f"ListReleases after the refused publishes: {versions}")
    if args.plain_version in versions:
        raise CheckFailed(f"a refused publish left {args.plain_version} behind: {versions}")
    expect_refusal(
        f"GetRelease {args.plain_version} after the refused publishes",
        lambda: land.releases.GetRelease(
            release_pb2.GetReleaseRequest(service_id=args.service, version=args.plain_version), timeout=10
        ),
        grpc.StatusCode.NOT_FOUND,
        f"{args.plain_version} not found",
    )
    # Nothing of them blocks the version: published without a plan, it goes through.
    info = land.releases.PublishRelease(
        publish_chunks(release_pb2, manifest, signature, contents, "ohne Plan"), timeout=60
    )
    log(f"PublishRelease without a plan: {info.service_id} {info.version} digest={info.content_digest}")
    expect("published version", info.version, args.plain_version)


def check_plan_refusals(args, land, other_land, pilot, release_pb2, rollout_pb2):
    """Step 4: SetRolloutPlan, ActOnRollout and GetRolloutStatus refuse what they must."""
    import grpc

    rb = rollout_pb2
    code = grpc.StatusCode
    gates = rb.RolloutGates(min_healthy=1)

    def set_plan(hub, version, *rings):
        request = rb.SetRolloutPlanRequest(
            service_id=args.service, version=version, plan=rb.RolloutPlan(rings=list(rings), gates=gates)
        )
        return lambda: hub.rollouts.SetRolloutPlan(request, timeout=10)

    good = rb.RolloutRing(name=PILOT, kommunen=[pilot.key])
    plain = args.plain_version
    expect_refusal(
        f"SetRolloutPlan as {pilot.name}",
        set_plan(pilot, plain, good),
        code.PERMISSION_DENIED,
        "only a Land",
    )
    expect_refusal(
        f"SetRolloutPlan as {other_land.name}",
        set_plan(other_land, plain, good),
        code.PERMISSION_DENIED,
        "nor offers it",
    )
    for what, ring, needle in [
        ("a share of 101 percent", rb.RolloutRing(name="Alle", share_percent=101), "percent"),
        ("a share of 300 percent", rb.RolloutRing(name="Alle", share_percent=300), "300"),
        (
            "a ring naming both Kommunen and a share",
            rb.RolloutRing(name="Beides", kommunen=[pilot.key], share_percent=10),
            "exactly one",
        ),
        ("a ring naming no one", rb.RolloutRing(name="Niemand"), "exactly one"),
        ("a 7-digit ring AGS", rb.RolloutRing(name=PILOT, kommunen=["0591300"]), "8 digits"),
        ("a ring AGS of letters", rb.RolloutRing(name=PILOT, kommunen=["0591300X"]), "8 digits"),
        ("a ring AGS of 100,000 digits", rb.RolloutRing(name=PILOT, kommunen=["1" * 100_000]), "8 digits"),
        ("a 4-digit Kreis", rb.RolloutRing(name=PILOT, kreise=["0591"]), "5 digits"),
        ("a ring name of 10,000 characters", rb.RolloutRing(name="R" * 10_000, kommunen=[pilot.key]), "64"),
        ("a ring name of 10,000 characters and no members", rb.RolloutRing(name="R" * 10_000), "10000 characters"),
        ("an empty ring name", rb.RolloutRing(name=" ", kommunen=[pilot.key]), "64"),
        (
            "2,001 Kommunen in a ring",
            rb.RolloutRing(name=PILOT, kommunen=[f"05{i:06d}" for i in range(2001)]),
            "2001",
        ),
    ]:
        expect_refusal(f"SetRolloutPlan with {what}", set_plan(land, plain, ring), code.INVALID_ARGUMENT, needle)
    eleven = [rb.RolloutRing(name=f"Ring {i}", share_percent=1) for i in range(11)]
    expect_refusal("SetRolloutPlan with 11 rings", set_plan(land, plain, *eleven), code.INVALID_ARGUMENT, "10 rings")
    expect_refusal(
        "SetRolloutPlan with two rings of one name",
        set_plan(land, plain, good, rb.RolloutRing(name="pilot", share_percent=10)),
        code.INVALID_ARGUMENT,
        "two rings",
    )
    expect_refusal(
        "SetRolloutPlan with no rings",
        lambda: land.rollouts.SetRolloutPlan(
            rb.SetRolloutPlanRequest(service_id=args.service, version=plain), timeout=10
        ),
        code.INVALID_ARGUMENT,
        "1 to 10 rings",
    )
    expect_refusal(
        f"SetRolloutPlan on {args.version}, which has a plan",
        set_plan(land, args.version, good),
        code.ALREADY_EXISTS,
        "is set",
    )
    expect_refusal(
        "SetRolloutPlan on a version never published",
        set_plan(land, "9.9.9", good),
        code.NOT_FOUND,
        "9.9.9",
    )

    def status_of(hub, version):
        request = rb.GetRolloutStatusRequest(service_id=args.service, version=version)
        return lambda: hub.rollouts.GetRolloutStatus(request, timeout=10)

    # None of the refused plans was stored.
    expect_refusal(f"GetRolloutStatus of {plain}, without a plan", status_of(land, plain), code.NOT_FOUND, "no plan")

    def act(hub, action, reason="", version=None):
        request = rb.RolloutActionRequest(
            service_id=args.service, version=version or args.version, action=action, reason=reason
        )
        return lambda: hub.rollouts.ActOnRollout(request, timeout=10)

    expect_refusal(
        "ActOnRollout UNSPECIFIED", act(land, rb.ROLLOUT_ACTION_UNSPECIFIED), code.INVALID_ARGUMENT, "PROMOTE, PAUSE"
    )
    expect_refusal("ActOnRollout with action 77", act(land, 77), code.INVALID_ARGUMENT, "PROMOTE, PAUSE")
    expect_refusal(
        "ActOnRollout PAUSE without a reason",
        act(land, rb.ROLLOUT_ACTION_PAUSE),
        code.INVALID_ARGUMENT,
        "reason",
    )
    expect_refusal(
        "ActOnRollout PAUSE with a blank reason",
        act(land, rb.ROLLOUT_ACTION_PAUSE, "  "),
        code.INVALID_ARGUMENT,
        "reason",
    )
    expect_refusal(
        "ActOnRollout ABORT with a reason of 100,000 characters",
        act(land, rb.ROLLOUT_ACTION_ABORT, "x" * 100_000),
        code.INVALID_ARGUMENT,
        "2000",
    )
    expect_refusal(
        f"ActOnRollout PROMOTE as {other_land.name}",
        act(other_land, rb.ROLLOUT_ACTION_PROMOTE),
        code.PERMISSION_DENIED,
        "nor offers it",
    )
    expect_refusal(
        f"ActOnRollout PROMOTE as {pilot.name}",
        act(pilot, rb.ROLLOUT_ACTION_PROMOTE),
        code.PERMISSION_DENIED,
        "only a Land",
    )
    expect_refusal(
        f"ActOnRollout PROMOTE of {plain}, without a plan",
        act(land, rb.ROLLOUT_ACTION_PROMOTE, version=plain),
        code.NOT_FOUND,
        "no plan",
    )
    # The refusals left the rollout as it was.
    status = status_of(land, args.version)()
    expect("rollout after the refusals", (status.state, status.open_ring), ("running", 0))


def check_promote(args, land, outside, release_pb2, rollout_pb2):
    """Step 5: the Land opens the last ring by hand."""
    rb = rollout_pb2
    status = land.rollouts.ActOnRollout(
        rb.RolloutActionRequest(service_id=args.service, version=args.version, action=rb.ROLLOUT_ACTION_PROMOTE),
        timeout=10,
    )
    log(f"ActOnRollout PROMOTE: state={status.state} open_ring={status.open_ring} verdict={status.verdict!r}")
    expect("rollout after PROMOTE", (status.state, status.open_ring), ("complete", 1))
    expect("verdict and gates of a complete rollout", (status.verdict, len(status.gates)), ("", 0))
    expect_position(args, outside, release_pb2, ring=1, name=LAST_RING, admitted=True, note="")


def check_deprecation_and_recall(args, land, other_land, outside, release_pb2):
    """Step 6: the building Land deprecates the service and recalls the release."""
    import grpc

    catalog_pb2 = importlib.import_module("efa.v1.catalog_pb2")
    code = grpc.StatusCode

    def deprecate(hub, reason, successor=""):
        request = catalog_pb2.DeprecateServiceRequest(service_id=args.service, reason=reason, successor_id=successor)
        return lambda: hub.catalog.DeprecateService(request, timeout=10)

    expect_refusal(
        f"DeprecateService as {other_land.name}",
        deprecate(other_land, "weg"),
        code.PERMISSION_DENIED,
        "cannot manage",
    )
    expect_refusal(
        "DeprecateService naming a successor that does not exist",
        deprecate(land, "weg", "gibt-es-nicht"),
        code.NOT_FOUND,
        "gibt-es-nicht",
    )
    expect_refusal("DeprecateService without a reason", deprecate(land, " "), code.INVALID_ARGUMENT, "reason")
    expect_refusal(
        "DeprecateService naming itself as the successor",
        deprecate(land, "weg", args.service),
        code.INVALID_ARGUMENT,
        "itself",
    )
    expect_refusal(
        "DeprecateService with a reason of 100,000 characters",
        deprecate(land, "x" * 100_000),
        code.INVALID_ARGUMENT,
        "2000",
    )
    reason = "Ab 2027 nur noch der Nachfolger"
    info = deprecate(land, reason, args.successor)()
    d = info.deprecated
    log(f"DeprecateService: reason={d.reason!r} successor={d.successor_id!r} at_ms={d.at_ms}")
    if not info.HasField("deprecated") or d.at_ms <= 0:
        raise CheckFailed(f"DeprecateService answers without a notice: {info}")
    expect("deprecation", (d.reason, d.successor_id), (reason, args.successor))
    seen = outside.catalog.GetService(catalog_pb2.GetServiceRequest(id=args.service), timeout=10)
    got = (seen.deprecated.reason, seen.deprecated.successor_id)
    expect(f"deprecation as {outside.name} reads it", got, (reason, args.successor))

    def yank(hub, reason, recall=True):
        request = release_pb2.YankReleaseRequest(
            service_id=args.service, version=args.version, reason=reason, recall=recall
        )
        return lambda: hub.releases.YankRelease(request, timeout=10)

    expect_refusal(
        f"YankRelease as {other_land.name}",
        yank(other_land, "weg"),
        code.PERMISSION_DENIED,
        "cannot manage",
    )
    expect_refusal("YankRelease with recall and no reason", yank(land, ""), code.INVALID_ARGUMENT, "reason")
    why = "Fehlerhafte Bescheide"
    info = yank(land, why)()
    log(f"YankRelease with recall: yanked={info.yanked} recalled={info.recalled} reason={info.yank_reason!r}")
    expect("the recalled release", (info.yanked, info.recalled, info.yank_reason), (True, True, why))
    detail = outside.releases.GetRelease(
        release_pb2.GetReleaseRequest(service_id=args.service, version=args.version), timeout=10
    )
    expect(f"the recall as {outside.name} reads it", (detail.info.yanked, detail.info.recalled), (True, True))
    listed = outside.releases.ListReleases(release_pb2.ListReleasesRequest(service_id=args.service), timeout=10)
    recalled = {r.version: r.recalled for r in listed.releases}
    log(f"ListReleases as {outside.name}: recalled {recalled}")
    expect("recalled versions", recalled, {args.version: True, args.plain_version: False})


def run(args):
    with tempfile.TemporaryDirectory(prefix="efa-pystubs-") as stubs:
        generate_stubs(args.proto_dir, stubs)
        release_pb2 = importlib.import_module("efa.v1.release_pb2")
        rollout_pb2 = importlib.import_module("efa.v1.rollout_pb2")
        with contextlib.ExitStack() as stack:
            land = connect(stack, args, args.cert, args.key, f"Land {args.land}", "land")
            expect("the building Land", land.key, args.land)
            pilot = connect(stack, args, args.pilot_cert, args.pilot_key, "the pilot Kommune", "kommune")
            outside = connect(stack, args, args.outside_cert, args.outside_key, "the Kommune outside", "kommune")
            operator = connect(stack, args, args.operator_cert, args.operator_key, "the operator", "operator")
            other_land = connect(stack, args, args.other_land_cert, args.other_land_key, "another Land", "land")
            for kommune in (pilot, outside):
                if not kommune.key.startswith(args.land):
                    raise CheckFailed(f"{kommune.name} ({kommune.key}) is not of Land {args.land}")
            if pilot.key == outside.key or other_land.key == args.land:
                raise CheckFailed("the pilot and the outside Kommune, and the two Länder, must differ")
            pilot.name, outside.name = f"pilot {pilot.key}", f"Kommune {outside.key}"
            other_land.name = f"Land {other_land.key}"

            publish_with_plan(args, land, release_pb2, rollout_pb2, pilot.key)
            check_running(args, land, operator, pilot, outside, release_pb2, rollout_pb2)
            check_refused_publishes(args, land, release_pb2, rollout_pb2, pilot.key)
            check_plan_refusals(args, land, other_land, pilot, release_pb2, rollout_pb2)
            check_promote(args, land, outside, release_pb2, rollout_pb2)
            check_deprecation_and_recall(args, land, other_land, outside, release_pb2)


def main():
    modules = ["cryptography", "grpc", "grpc_tools", "jsonschema"]
    return run_main(run, parse_args(), modules, "OK: rollout, deprecation and recall from Python")


if __name__ == "__main__":
    sys.exit(main())
