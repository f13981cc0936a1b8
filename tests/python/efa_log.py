#!/usr/bin/env python3
"""An outside audit of the hub's transparency log, written from the specifications alone.

Nothing here shares code with EfA Hub's Rust side (tlog/): the stubs come from proto/
(grpc_tools.protoc), the hashing is hashlib, Ed25519 is the `cryptography` package, and
every format is implemented from its specification:

  - C2SP signed-note (the checkpoint's envelope and the log's verifier key),
  - C2SP tlog-checkpoint (origin, size, base64 root),
  - C2SP tlog-tiles (tile paths, entry bundles, hash tiles),
  - C2SP tlog-cosignature (cosignature/v1, Ed25519 witness signatures),
  - RFC 6962 / RFC 9162 (leaf and node hashes, the Merkle tree hash, and the verification
    of inclusion and consistency proofs, RFC 9162 sections 2.1.3.2 and 2.1.4.2).

Before it talks to the hub it checks itself against published vectors (the RFC 6962
reference vectors of certificate-transparency, Go's sumdb/note example note, a real
witness cosignature and the tile path examples of C2SP). Then, as a Kommune (--cert/--key):

  1. GetCheckpoint: parses the signed note and the log key (--log-key), checks the key id
     and the log's Ed25519 signature, and reads origin, size and root;
  2. fetches every entry bundle (GetTile tile/entries/...), hashes the leaves and computes
     the Merkle tree hash, which must be the checkpoint's root;
  3. fetches every hash tile (tile/0/... and any higher level the tree has): each hash must
     be the leaf hash, or the subtree hash, computed in 2;
  4. decodes each leaf as efa.v1.LogLeaf: format 1, seq = index + 1, a kind; counts them;
  5. checks inclusion proofs (by index, and by release for each published release) and
     consistency proofs against roots it computed itself;
  6. sends hostile requests (proofs beyond the tree or backwards, malformed and enormous
     tile paths, a cosignature from a Kommune and, with --land-cert/--land-key, a garbage
     note): each gets the right code and a message under 1 KiB;
  7. with --land-cert/--land-key, witnesses the checkpoint: cosigns it with a fresh
     cosignature/v1 key, hands the cosignature to the hub (AddCosignature) and checks the
     hub keeps it; a cosignature with a forged time is refused;
  8. reads the newest checkpoint again: the same root at the same size, or a consistency
     proof from the audited tree to the new one.

Prints `log ok: size N, root <base64>, M adoption leaves, K proofs checked`. Exit code 0 on
success; non-zero with a message on stderr otherwise (3: a Python package is missing).

    python3 tests/python/efa_log.py --addr https://127.0.0.1:50051 \\
        --ca pki/ca.pem --cert pki/kommune-05913000.pem --key pki/kommune-05913000.key \\
        --log-key "efa-hub.example/log+1a2b3c4d+AQ..." \\
        --land-cert pki/land-09.pem --land-key pki/land-09.key
"""

import base64
import binascii
import contextlib
import hashlib
import importlib
import os
import struct
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

HASH_SIZE = 32
TILE_WIDTH = 256
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
EM_DASH = "\u2014"
MAX_MESSAGE = 1024
# How often the audit starts over when the hub signs a newer checkpoint while it runs
# (tiles are served for the newest checkpoint's tree only).
ATTEMPTS = 3


def parse_args():
    p = connection_args(__doc__, "a Kommune's")
    p.add_argument("--log-key", required=True, help="the log's verifier key: <origin>+<hex id>+<base64 key>")
    p.add_argument("--land-cert", default="", help="client certificate of a Land, to witness (PEM)")
    p.add_argument("--land-key", default="", help="client key of that Land (PEM)")
    p.add_argument("--inclusion-samples", type=int, default=6, help="leaves whose inclusion proofs are checked")
    args = p.parse_args()
    if bool(args.land_cert) != bool(args.land_key):
        p.error("--land-cert and --land-key go together")
    return args


# ---------------------------------------------------------------------------------------
# RFC 6962 / RFC 9162: hashes, the Merkle tree hash and proof verification.


def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(leaf):
    """RFC 6962 section 2.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return sha256(b"\x00" + leaf)


def node_hash(left, right):
    """RFC 6962 section 2.1: SHA-256(0x01 || MTH(left) || MTH(right))."""
    return sha256(b"\x01" + left + right)


def largest_power_of_two_below(n):
    """The largest power of two k with k < n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_tree_hash(hashes):
    """MTH of the leaves whose leaf hashes are `hashes` (RFC 6962 section 2.1)."""
    n = len(hashes)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return hashes[0]
    k = largest_power_of_two_below(n)
    return node_hash(merkle_tree_hash(hashes[:k]), merkle_tree_hash(hashes[k:]))


def verify_inclusion(leaf_index, tree_size, leaf, path, root):
    """RFC 9162 section 2.1.3.2; `leaf` is the leaf hash. Raises CheckFailed."""
    if leaf_index >= tree_size:
        raise CheckFailed(f"inclusion: leaf {leaf_index} is not in a tree of {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if len(p) != HASH_SIZE:
            raise CheckFailed(f"inclusion: a proof hash of {len(p)} bytes")
        if sn == 0:
            raise CheckFailed(f"inclusion: the proof of leaf {leaf_index} in {tree_size} is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckFailed(f"inclusion: the proof of leaf {leaf_index} in {tree_size} is too short")
    if r != root:
        raise CheckFailed(f"inclusion: the proof of leaf {leaf_index} in {tree_size} leads to another root")


def verify_consistency(first, second, first_hash, second_hash, path):
    """RFC 9162 section 2.1.4.2. Raises CheckFailed."""
    what = f"consistency {first} -> {second}"
    if first > second:
        raise CheckFailed(f"{what}: the old tree is larger")
    if first == second:
        if path:
            raise CheckFailed(f"{what}: a proof between equal sizes must be empty")
        if first_hash != second_hash:
            raise CheckFailed(f"{what}: two roots for one size (a split view)")
        return
    if first == 0:
        if path:
            raise CheckFailed(f"{what}: a proof from the empty tree must be empty")
        return
    if not path:
        raise CheckFailed(f"{what}: empty proof")
    if any(len(p) != HASH_SIZE for p in path):
        raise CheckFailed(f"{what}: a proof hash that is not {HASH_SIZE} bytes")
    path = list(path)
    if first & (first - 1) == 0:  # an exact power of two
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise CheckFailed(f"{what}: the proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckFailed(f"{what}: the proof is too short")
    if fr != first_hash:
        raise CheckFailed(f"{what}: the proof does not lead to the old root")
    if sr != second_hash:
        raise CheckFailed(f"{what}: the proof does not lead to the new root")


# ---------------------------------------------------------------------------------------
# C2SP signed-note, tlog-checkpoint and tlog-cosignature.


def b64decode(text, what):
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CheckFailed(f"{what}: not standard base64: {text[:80]!r}")


def valid_key_name(name):
    """signed-note: a key name is non-empty, without Unicode spaces or '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name, alg, public):
    """signed-note: the first four bytes of SHA-256(name || "\\n" || type || key), big-endian."""
    return struct.unpack(">I", sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public)[:4])[0]


class VerifierKey:
    """A signed-note verifier key: <name>+<8 hex digits of the key id>+<base64(type || key)>."""

    def __init__(self, text, alg):
        parts = text.strip().split("+", 2)  # base64 has '+' too
        if len(parts) != 3:
            raise CheckFailed(f"verifier key {text[:100]!r}: not <name>+<id>+<key>")
        name, hex_id, key = parts
        if not valid_key_name(name):
            raise CheckFailed(f"verifier key: invalid name {name!r}")
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise CheckFailed(f"verifier key: the key id {hex_id!r} is not 8 lowercase hex digits")
        raw = b64decode(key, "verifier key")
        if len(raw) != 1 + 32 or raw[0] != alg:
            raise CheckFailed(f"verifier key: want type 0x{alg:02x} and a 32-byte Ed25519 key, got {len(raw)} bytes")
        self.name, self.id, self.alg, self.public = name, int(hex_id, 16), alg, raw[1:]
        wanted = key_id(name, alg, self.public)
        if wanted != self.id:
            raise CheckFailed(f"verifier key: key id {self.id:08x}, but the key's id is {wanted:08x}")

    def verify_ed25519(self, message, signature):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
            return True
        except InvalidSignature:
            return False


def cosignature_message(timestamp, body):
    """tlog-cosignature: what a cosignature/v1 key signs."""
    return f"cosignature/v1\ntime {timestamp}\n".encode("ascii") + body


def parse_note(note):
    """signed-note: (text bytes, [(name, key id, signature bytes)]); checks the structure."""
    if len(note) > 1 << 20:
        raise CheckFailed(f"note: {len(note)} bytes")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckFailed("note: not UTF-8")
    if any(ord(c) < 0x20 and c != "\n" for c in decoded) or "\x7f" in decoded:
        raise CheckFailed("note: ASCII control characters other than newline")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise CheckFailed("note: no blank line between the text and the signatures")
    text, sigs = note[: split + 1], note[split + 2 :]
    if not sigs.endswith(b"\n"):
        raise CheckFailed("note: the signature lines do not end with a newline")
    signatures = []
    for line in sigs.decode("utf-8")[:-1].split("\n"):
        prefix = EM_DASH + " "
        if not line.startswith(prefix):
            raise CheckFailed(f"note: a signature line does not start with an em dash: {line[:80]!r}")
        fields = line[len(prefix) :].split(" ")
        if len(fields) != 2 or not valid_key_name(fields[0]):
            raise CheckFailed(f"note: a signature line is not '— <name> <signature>': {line[:80]!r}")
        raw = b64decode(fields[1], "note signature")
        if len(raw) < 5:
            raise CheckFailed(f"note: a signature of {len(raw)} bytes")
        signatures.append((fields[0], struct.unpack(">I", raw[:4])[0], raw[4:]))
    if not signatures:
        raise CheckFailed("note: no signatures")
    return text, signatures


def parse_checkpoint_body(text):
    """tlog-checkpoint: origin, decimal size and base64 root, then optional extension lines."""
    lines = text.decode("utf-8").split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckFailed(f"checkpoint: fewer than three lines: {text[:200]!r}")
    origin, size, root, extensions = lines[0], lines[1], lines[2], lines[3:-1]
    if not origin:
        raise CheckFailed("checkpoint: empty origin")
    if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")) or int(size) >= 1 << 64:
        raise CheckFailed(f"checkpoint: size {size!r} is not a decimal u64 without leading zeros")
    root_hash = b64decode(root, "checkpoint root")
    if len(root_hash) != HASH_SIZE:
        raise CheckFailed(f"checkpoint: a root of {len(root_hash)} bytes")
    if any(not e for e in extensions):
        raise CheckFailed("checkpoint: an empty extension line")
    return origin, int(size), root_hash, extensions


def open_checkpoint(note, log_key):
    """Checks the log's signature on `note`: (origin, size, root, text, signatures)."""
    text, signatures = parse_note(note)
    ours = [(n, i, s) for n, i, s in signatures if n == log_key.name and i == log_key.id]
    if not ours:
        names = ", ".join(f"{n}+{i:08x}" for n, i, _ in signatures)
        raise CheckFailed(f"checkpoint: no signature by the log key {log_key.name}+{log_key.id:08x} (only {names})")
    for _, _, sig in ours:
        if len(sig) != 64 or not log_key.verify_ed25519(text, sig):
            raise CheckFailed("checkpoint: the log key's Ed25519 signature does not verify")
    origin, size, root, extensions = parse_checkpoint_body(text)
    if origin != log_key.name:
        raise CheckFailed(f"checkpoint: origin {origin!r}, but the log key is named {log_key.name!r}")
    if extensions:
        log(f"checkpoint has extension lines: {extensions}")
    return origin, size, root, text, signatures


# ---------------------------------------------------------------------------------------
# C2SP tlog-tiles.


def tile_index(n):
    """N in groups of three digits, all but the last prefixed with x: 1234067 -> x001/x234/067."""
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def tile_path(kind, n, width):
    """`tile/<kind>/<N>[.p/<W>]`; kind is a level or "entries"."""
    path = f"tile/{kind}/{tile_index(n)}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def tiles_of(count):
    """(index, width) of the tiles holding `count` items."""
    return [(i, min(TILE_WIDTH, count - i * TILE_WIDTH)) for i in range((count + TILE_WIDTH - 1) // TILE_WIDTH)]


def parse_entry_bundle(data, width, path):
    """Entries, each a big-endian u16 length and that many bytes; exactly `width` of them."""
    entries, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise CheckFailed(f"{path}: a length prefix is cut short")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if pos + 2 + length > len(data):
            raise CheckFailed(f"{path}: an entry is cut short")
        entries.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    if len(entries) != width:
        raise CheckFailed(f"{path}: {len(entries)} entries where {width} belong")
    return entries


# ---------------------------------------------------------------------------------------
# Self-test against published vectors, so the checks below are not checked only by
# agreement with the hub.

# certificate-transparency's RFC 6962 reference vectors: leaves, roots of sizes 1 to 8.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf number from 1, tree size, audit path)
CT_INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, consistency proof)
CT_CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# golang.org/x/mod/sumdb/note: the package's documented example key and signed note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode("utf-8")
# A checkpoint of a Certificate Transparency log as served by the public witness network,
# cosigned (cosignature/v1) by the witness remora.n621.de.
CT_CHECKPOINT = (
    "arche2025h1.staging.ct.transparency.dev\n"
    "1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
    "\n"
    "\u2014 remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU"
    "/zZ0WBxtqB0DrAWfBw==\n"
).encode("utf-8")
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"


def verify_cosignature(witness, text, signatures):
    """Whether a cosignature/v1 line of `witness` over `text` is among `signatures`."""
    for name, kid, sig in signatures:
        if name == witness.name and kid == witness.id and len(sig) == 8 + 64:
            (timestamp,) = struct.unpack(">Q", sig[:8])
            if witness.verify_ed25519(cosignature_message(timestamp, text), sig[8:]):
                return True
    return False


def self_test():
    h = bytes.fromhex
    leaves = [leaf_hash(h(x)) for x in CT_LEAVES]
    for size, want in enumerate(CT_ROOTS, start=1):
        if merkle_tree_hash(leaves[:size]) != h(want):
            raise CheckFailed(f"self-test: the Merkle tree hash of size {size} is not the RFC 6962 vector")
    for leaf, size, path in CT_INCLUSION:
        proof = [h(p) for p in path]
        verify_inclusion(leaf - 1, size, leaves[leaf - 1], proof, h(CT_ROOTS[size - 1]))
        must_fail(lambda: verify_inclusion(leaf - 1, size, leaf_hash(b"x"), proof, h(CT_ROOTS[size - 1])))
        must_fail(lambda: verify_inclusion(leaf - 1, size, leaves[leaf - 1], proof[:-1], h(CT_ROOTS[size - 1])))
    for old, new, path in CT_CONSISTENCY:
        proof = [h(p) for p in path]
        r1, r2 = h(CT_ROOTS[old - 1]), h(CT_ROOTS[new - 1])
        verify_consistency(old, new, r1, r2, proof)
        must_fail(lambda: verify_consistency(old, new, r2, r1, proof))
        must_fail(lambda: verify_consistency(old, new, r1, r2, proof[1:]))
    go = VerifierKey(GO_VKEY, ALG_ED25519)
    text, sigs = parse_note(GO_NOTE)
    if not any(n == go.name and i == go.id and go.verify_ed25519(text, s) for n, i, s in sigs):
        raise CheckFailed("self-test: Go's example note does not verify")
    if go.verify_ed25519(text.replace(b"answer", b"Answer"), sigs[0][2]):
        raise CheckFailed("self-test: a changed note verifies")
    remora = VerifierKey(REMORA_VKEY, ALG_COSIGNATURE_V1)
    text, sigs = parse_note(CT_CHECKPOINT)
    parse_checkpoint_body(text)
    if not verify_cosignature(remora, text, sigs):
        raise CheckFailed("self-test: remora's cosignature does not verify")
    if verify_cosignature(remora, text.replace(b"1432088532", b"1432088533"), sigs):
        raise CheckFailed("self-test: a cosignature verifies for a changed checkpoint")
    for kind, n, width, want in [
        (0, 1234067, 256, "tile/0/x001/x234/067"),
        (0, 1234067, 128, "tile/0/x001/x234/067.p/128"),
        ("entries", 0, 12, "tile/entries/000.p/12"),
        (3, 0, 256, "tile/3/000"),
    ]:
        if tile_path(kind, n, width) != want:
            raise CheckFailed(f"self-test: tile path {tile_path(kind, n, width)!r}, C2SP says {want!r}")
    log("self-test: RFC 6962 vectors, Go's signed note, a cosignature/v1 and C2SP tile paths check out")


def must_fail(check):
    try:
        check()
    except CheckFailed:
        return
    raise CheckFailed("self-test: a tampered proof verifies")


# ---------------------------------------------------------------------------------------
# Talking to the hub.


class Moved(Exception):
    """The hub signed a newer checkpoint while the audit ran: start over."""


def connect(stack, args, cert, key, role):
    import grpc

    catalog_pb2 = importlib.import_module("efa.v1.catalog_pb2")
    catalog_grpc = importlib.import_module("efa.v1.catalog_pb2_grpc")
    log_grpc = importlib.import_module("efa.v1.log_pb2_grpc")
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(key), certificate_chain=read(cert)
    )
    options = [("grpc.ssl_target_name_override", args.server_name)]
    channel = stack.enter_context(grpc.secure_channel(target_of(args.addr), creds, options=options))
    try:
        grpc.channel_ready_future(channel).result(timeout=15)
    except grpc.FutureTimeoutError:
        raise CheckFailed(f"could not connect to {target_of(args.addr)} within 15 s")
    me = catalog_grpc.CatalogServiceStub(channel).WhoAmI(catalog_pb2.WhoAmIRequest(), timeout=10)
    if me.role != role:
        raise CheckFailed(f"WhoAmI says role {me.role!r}, expected {role!r}")
    log(f"connected as {me.role} {me.key} ({me.display_name})")
    return log_grpc.LogServiceStub(channel)


def refused(what, call, codes):
    """Runs `call`, which must fail with one of `codes` and a message under 1 KiB."""
    import grpc

    try:
        call()
    except grpc.RpcError as e:
        details = e.details() or ""
        if e.code() not in codes:
            wanted = " or ".join(c.name for c in codes)
            raise CheckFailed(f"{what}: expected {wanted}, got {e.code().name}: {details[:200]!r}")
        if len(details.encode("utf-8")) >= MAX_MESSAGE:
            raise CheckFailed(f"{what}: a message of {len(details.encode('utf-8'))} bytes")
        log(f"refused as expected: {what}: {e.code().name}: {details}")
        return
    raise CheckFailed(f"{what}: the hub accepted it")


def get_tile(stub, log_pb2, path, size, newest):
    """One tile of the tree of `size` leaves; Moved if the hub's newest tree is another."""
    import grpc

    try:
        tile = stub.GetTile(log_pb2.GetTileRequest(path=path), timeout=10)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.OUT_OF_RANGE and newest() != size:
            raise Moved()
        raise CheckFailed(f"GetTile {path}: {e.code().name}: {(e.details() or '')[:200]}")
    if tile.path != path:
        raise CheckFailed(f"GetTile {path}: the answer names {tile.path!r}")
    return tile.data


class Audit:
    """What one pass over the log found."""

    def __init__(self, note, size, root, leaves, hashes):
        self.note, self.size, self.root, self.leaves, self.hashes = note, size, root, leaves, hashes
        self.proofs = 0
        self.adoptions = 0
        self.releases = []


def audit_tree(stub, log_pb2, log_key):
    """Steps 1 to 3: the signed checkpoint, every entry bundle and hash tile, the root."""
    note = stub.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10).note
    origin, size, root, _, signatures = open_checkpoint(note, log_key)
    log(
        f"checkpoint of {origin}: size {size}, root {base64.b64encode(root).decode()}, "
        f"{len(signatures)} signature(s), the log's Ed25519 signature verified"
    )

    def newest():
        return open_checkpoint(stub.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10).note, log_key)[1]

    leaves, paths = [], []
    for n, width in tiles_of(size):
        path = tile_path("entries", n, width)
        paths.append(path)
        leaves.extend(parse_entry_bundle(get_tile(stub, log_pb2, path, size, newest), width, path))
    hashes = [leaf_hash(leaf) for leaf in leaves]
    computed = merkle_tree_hash(hashes)
    if computed != root:
        raise CheckFailed(
            f"the Merkle tree hash of the {size} leaves is {base64.b64encode(computed).decode()}, "
            f"the checkpoint says {base64.b64encode(root).decode()}"
        )
    log(f"{size} leaves in {', '.join(paths)}: their Merkle tree hash is the checkpoint's root")

    level, span, paths = 0, 1, []
    while size // span > 0:
        nodes = size // span  # complete subtrees of `span` leaves: the hashes at tree level 8*level
        for n, width in tiles_of(nodes):
            path = tile_path(level, n, width)
            data = get_tile(stub, log_pb2, path, size, newest)
            if len(data) != width * HASH_SIZE:
                raise CheckFailed(f"{path}: {len(data)} bytes where {width} hashes belong")
            for j in range(width):
                first = (n * TILE_WIDTH + j) * span
                want = merkle_tree_hash(hashes[first : first + span])
                if data[j * HASH_SIZE : (j + 1) * HASH_SIZE] != want:
                    raise CheckFailed(f"{path}: hash {j} is not the hash of leaves {first}..{first + span}")
            paths.append(path)
        level, span = level + 1, span * TILE_WIDTH
    log(f"hash tiles {', '.join(paths)} hold the leaf and subtree hashes computed here")
    return Audit(note, size, root, leaves, hashes)


def check_leaves(a, log_pb2):
    """Step 4: every leaf is an efa.v1.LogLeaf of format 1 whose seq is its index + 1."""
    from google.protobuf.message import DecodeError

    kinds = {}
    for i, raw in enumerate(a.leaves):
        leaf = log_pb2.LogLeaf()
        try:
            leaf.ParseFromString(raw)
        except DecodeError as e:
            raise CheckFailed(f"leaf {i} is not an efa.v1.LogLeaf: {e}")
        if leaf.format != 1:
            raise CheckFailed(f"leaf {i}: format {leaf.format}, expected 1")
        if leaf.seq != i + 1:
            raise CheckFailed(f"leaf {i}: seq {leaf.seq}, expected {i + 1}")
        kind = leaf.WhichOneof("kind")
        if kind is None:
            raise CheckFailed(f"leaf {i} (seq {leaf.seq}) has no kind")
        if leaf.at_ms <= 0:
            raise CheckFailed(f"leaf {i}: at_ms {leaf.at_ms}")
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "release_published":
            r = leaf.release_published
            a.releases.append((i, r.service_id, r.version))
        if kind == "adoption_reported":
            r = leaf.adoption_reported
            if not r.ags or not r.service_id:
                raise CheckFailed(f"leaf {i}: an adoption without AGS or service: {r}")
    a.adoptions = kinds.get("adoption_reported", 0)
    log("leaves by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


def check_proofs(a, stub, log_pb2, samples):
    """Step 5: inclusion and consistency proofs against roots computed here."""
    size = a.size
    if size == 0:
        return
    picks = sorted({0, size - 1, size // 2, size // 3, (2 * size) // 3} | set(range(min(samples, size))))
    for index in picks:
        for tree_size in sorted({size, index + 1, (index + size + 1) // 2}):
            p = stub.GetInclusionProof(log_pb2.InclusionProofRequest(index=index, tree_size=tree_size), timeout=10)
            if (p.index, p.tree_size) != (index, tree_size):
                raise CheckFailed(f"GetInclusionProof({index}, {tree_size}) answered ({p.index}, {p.tree_size})")
            if p.leaf != a.leaves[index]:
                raise CheckFailed(f"GetInclusionProof({index}, {tree_size}): not the leaf of the entry bundle")
            root = a.root if tree_size == size else merkle_tree_hash(a.hashes[:tree_size])
            verify_inclusion(index, tree_size, leaf_hash(p.leaf), list(p.hashes), root)
            a.proofs += 1
    for index, service, version in a.releases:
        p = stub.GetInclusionProof(
            log_pb2.InclusionProofRequest(service_id=service, version=version, tree_size=size), timeout=10
        )
        if p.index != index or p.leaf != a.leaves[index]:
            raise CheckFailed(f"the inclusion proof of release {service} {version} is of leaf {p.index}, not {index}")
        verify_inclusion(index, size, leaf_hash(p.leaf), list(p.hashes), a.root)
        a.proofs += 1
    log(f"inclusion proofs of leaves {picks} and of {len(a.releases)} release(s) verify (RFC 9162 2.1.3.2)")

    olds = sorted({1, 2, 3, size // 2, size - 1, size} - {0})
    olds = [k for k in olds if k <= size]
    for old in olds:
        for new in sorted({size, (old + size + 1) // 2}):
            p = stub.GetConsistencyProof(log_pb2.ConsistencyProofRequest(old_size=old, new_size=new), timeout=10)
            old_root = merkle_tree_hash(a.hashes[:old])
            new_root = a.root if new == size else merkle_tree_hash(a.hashes[:new])
            verify_consistency(old, new, old_root, new_root, list(p.hashes))
            if old < new and p.hashes:
                tampered = list(p.hashes)
                tampered[-1] = sha256(tampered[-1])
                try:
                    verify_consistency(old, new, old_root, new_root, tampered)
                except CheckFailed:
                    pass
                else:
                    raise CheckFailed(f"a tampered consistency proof {old} -> {new} verifies")
            a.proofs += 1
    log(f"consistency proofs from sizes {olds} verify against roots computed here (RFC 9162 2.1.4.2)")


def check_refusals(a, stub, land, log_pb2):
    """Step 6: hostile requests get the right code and a short message."""
    import grpc

    code = grpc.StatusCode
    size = a.size
    refused(
        f"GetInclusionProof({size}, {size}): an index past the tree",
        lambda: stub.GetInclusionProof(log_pb2.InclusionProofRequest(index=size, tree_size=size), timeout=10),
        [code.OUT_OF_RANGE],
    )
    refused(
        f"GetInclusionProof(0, {2**64 - 1}): a tree larger than any checkpoint",
        lambda: stub.GetInclusionProof(log_pb2.InclusionProofRequest(index=0, tree_size=2**64 - 1), timeout=10),
        [code.OUT_OF_RANGE],
    )
    refused(
        f"GetConsistencyProof({size + 1}, {size}): backwards",
        lambda: stub.GetConsistencyProof(log_pb2.ConsistencyProofRequest(old_size=size + 1, new_size=size), timeout=10),
        [code.INVALID_ARGUMENT],
    )
    for what, path in [
        ("a path that climbs out", "../x"),
        ("a path that climbs out of tile/", "tile/../../etc/passwd"),
        ("a 10,000-character path", "tile/0/" + "x123/" * 1998 + "000"),
        ("a bundle far past the tree", "tile/entries/999"),
        # 1 to 255 and never the width of bundle 0 (full from 256 leaves on).
        ("a partial bundle of the wrong width", tile_path("entries", 0, size % 255 + 1)),
    ]:
        refused(
            f"GetTile with {what} ({path[:40]!r}{'...' if len(path) > 40 else ''})",
            lambda path=path: stub.GetTile(log_pb2.GetTileRequest(path=path), timeout=10),
            [code.INVALID_ARGUMENT, code.OUT_OF_RANGE],
        )
    refused(
        "AddCosignature as a Kommune",
        lambda: stub.AddCosignature(
            log_pb2.AddCosignatureRequest(note=a.note, witness_key="witness.test+00000000+BAAA"), timeout=10
        ),
        [code.PERMISSION_DENIED],
    )
    if land is None:
        log("no --land-cert: the cosignature checks as a Land are skipped")
        return
    key, vkey = witness_key()
    garbage = b"\x00garbage\n\n"
    refused(
        "AddCosignature as a Land with a garbage note",
        lambda: land.AddCosignature(log_pb2.AddCosignatureRequest(note=garbage, witness_key=vkey), timeout=10),
        [code.INVALID_ARGUMENT],
    )
    refused(
        "AddCosignature as a Land with a garbage witness key",
        lambda: land.AddCosignature(log_pb2.AddCosignatureRequest(note=a.note, witness_key="x" * 5000), timeout=10),
        [code.INVALID_ARGUMENT],
    )
    forged = cosign(key, vkey, a.note, int(time.time()), forge_time=True)
    refused(
        "AddCosignature with a cosignature whose time was changed",
        lambda: land.AddCosignature(log_pb2.AddCosignatureRequest(note=forged, witness_key=vkey), timeout=10),
        [code.INVALID_ARGUMENT],
    )


def witness_key(name="witness.efa-log-py.test/efa"):
    """A fresh cosignature/v1 key: (private key, verifier key text)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = key_id(name, ALG_COSIGNATURE_V1, public)
    return key, f"{name}+{kid:08x}+{base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + public).decode()}"


def cosign(key, vkey_text, note, timestamp, forge_time=False):
    """`note` with a cosignature/v1 line of `key` added (C2SP tlog-cosignature)."""
    witness = VerifierKey(vkey_text, ALG_COSIGNATURE_V1)
    text, _ = parse_note(note)
    sig = key.sign(cosignature_message(timestamp, text))
    stamped = timestamp + 1 if forge_time else timestamp
    line = base64.b64encode(struct.pack(">IQ", witness.id, stamped) + sig).decode()
    return note + f"{EM_DASH} {witness.name} {line}\n".encode("utf-8")


def check_witnessing(a, stub, land, log_pb2, log_key):
    """Step 7: a Land cosigns the checkpoint; the hub keeps the cosignature."""
    key, vkey = witness_key()
    witness = VerifierKey(vkey, ALG_COSIGNATURE_V1)
    cosigned = cosign(key, vkey, a.note, int(time.time()))
    back = land.AddCosignature(log_pb2.AddCosignatureRequest(note=cosigned, witness_key=vkey), timeout=10).note
    _, size, root, text, signatures = open_checkpoint(back, log_key)
    if (size, root) != (a.size, a.root):
        raise CheckFailed(f"AddCosignature returned a checkpoint of size {size}, not {a.size}")
    if not verify_cosignature(witness, text, signatures):
        raise CheckFailed("the checkpoint AddCosignature returned lacks a valid cosignature of our witness key")
    latest = stub.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10).note
    _, size, _, text, signatures = open_checkpoint(latest, log_key)
    if size == a.size and not verify_cosignature(witness, text, signatures):
        raise CheckFailed("GetCheckpoint serves the checkpoint without the cosignature it accepted")
    log(f"cosigned as witness {witness.name}: the hub verified and keeps the cosignature/v1 line")
    log(f"witness key: {vkey}")


def check_still_consistent(a, stub, log_pb2, log_key):
    """Step 8: the newest checkpoint extends the audited tree."""
    note = stub.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10).note
    _, size, root, _, _ = open_checkpoint(note, log_key)
    if size < a.size:
        raise CheckFailed(f"the log shrank from {a.size} to {size} leaves during the audit")
    proof = []
    if size > a.size:
        proof = list(
            stub.GetConsistencyProof(log_pb2.ConsistencyProofRequest(old_size=a.size, new_size=size), timeout=10).hashes
        )
    verify_consistency(a.size, size, a.root, root, proof)
    a.proofs += 1
    log(f"the newest checkpoint ({size} leaves) is consistent with the audited tree")


def run(args):
    self_test()
    log_key = VerifierKey(args.log_key, ALG_ED25519)
    log(f"log key {log_key.name}+{log_key.id:08x}: the key id matches the key")
    with tempfile.TemporaryDirectory(prefix="efa-pystubs-") as stubs, contextlib.ExitStack() as stack:
        generate_stubs(args.proto_dir, stubs)
        log_pb2 = importlib.import_module("efa.v1.log_pb2")
        stub = connect(stack, args, args.cert, args.key, "kommune")
        land = connect(stack, args, args.land_cert, args.land_key, "land") if args.land_cert else None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                a = audit_tree(stub, log_pb2, log_key)
                break
            except Moved:
                log(f"the hub signed a newer checkpoint during pass {attempt}; starting over")
        else:
            raise CheckFailed(f"the checkpoint moved during each of {ATTEMPTS} passes")
        check_leaves(a, log_pb2)
        check_proofs(a, stub, log_pb2, args.inclusion_samples)
        check_refusals(a, stub, land, log_pb2)
        if land is not None:
            check_witnessing(a, stub, land, log_pb2, log_key)
        check_still_consistent(a, stub, log_pb2, log_key)
        log(
            f"log ok: size {a.size}, root {base64.b64encode(a.root).decode()}, "
            f"{a.adoptions} adoption leaves, {a.proofs} proofs checked"
        )


def main():
    modules = ["grpc", "grpc_tools", "google.protobuf", "cryptography"]
    return run_main(run, parse_args(), modules, "OK: the hub's transparency log checks out from Python")


if __name__ == "__main__":
    sys.exit(main())
