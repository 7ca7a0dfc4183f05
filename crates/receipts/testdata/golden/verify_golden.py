#!/usr/bin/env python3
"""Independent check of the golden receipt vectors, written from docs/receipts.md alone.

Uses PyPI `rfc8785` for the canonical form and a BIP340 verifier written here from the BIP's
specification (https://github.com/bitcoin/bips/blob/master/bip-0340.mediawiki), so nothing of
the Rust implementation is trusted.

usage: verify_golden.py EXPORT.jsonl [HASHES.json]
"""

import base64
import hashlib
import json
import sys

import rfc8785

# --- BIP340 verification (secp256k1), following the BIP's reference pseudocode -------------

P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)


def tagged_hash(tag, msg):
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + msg).digest()


def point_add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    if p1[0] == p2[0] and p1[1] != p2[1]:
        return None
    if p1 == p2:
        lam = (3 * p1[0] * p1[0] * pow(2 * p1[1], P - 2, P)) % P
    else:
        lam = ((p2[1] - p1[1]) * pow(p2[0] - p1[0], P - 2, P)) % P
    x3 = (lam * lam - p1[0] - p2[0]) % P
    return (x3, (lam * (p1[0] - x3) - p1[1]) % P)


def point_mul(p, k):
    r = None
    for i in range(256):
        if (k >> i) & 1:
            r = point_add(r, p)
        p = point_add(p, p)
    return r


def lift_x(x):
    if x >= P:
        return None
    y_sq = (pow(x, 3, P) + 7) % P
    y = pow(y_sq, (P + 1) // 4, P)
    if pow(y, 2, P) != y_sq:
        return None
    return (x, y if y & 1 == 0 else P - y)


def schnorr_verify(msg, pubkey, sig):
    if len(msg) != 32 or len(pubkey) != 32 or len(sig) != 64:
        return False
    pt = lift_x(int.from_bytes(pubkey, "big"))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if pt is None or r >= P or s >= N:
        return False
    e = int.from_bytes(tagged_hash("BIP0340/challenge", sig[:32] + pubkey + msg), "big") % N
    big_r = point_add(point_mul(G, s), point_mul(pt, N - e))
    return big_r is not None and big_r[1] % 2 == 0 and big_r[0] == r


# BIP340 test vector 1 checks the verifier itself before it is trusted with anything.
assert schnorr_verify(
    bytes.fromhex("243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89"),
    bytes.fromhex("DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659"),
    bytes.fromhex(
        "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE3341"
        "8906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A"
    ),
)
assert not schnorr_verify(bytes(32), bytes.fromhex(
    "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659"), bytes(64))

# --- RFC 6962 Merkle tree -------------------------------------------------------------------


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def mth(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


# --- the export -----------------------------------------------------------------------------


def main():
    failures = []
    keys = {}
    receipts = []
    checkpoints = []
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["record"] == "key":
                assert rec["algorithm"] == "bip340-secp256k1"
                keys[rec["service"]] = rec["key_id"]
            elif rec["record"] == "receipt":
                receipts.append(rec["receipt"])
            elif rec["record"] == "checkpoint":
                checkpoints.append(rec)
    computed = {}
    for r in receipts:
        unsigned = {k: v for k, v in r.items() if k not in ("hash", "signature")}
        canonical = rfc8785.dumps(unsigned)
        digest = hashlib.sha256(canonical).digest()
        h = "sha256:" + digest.hex()
        computed[r["receipt_id"]] = (canonical.decode("utf-8"), h)
        if h != r["hash"]:
            failures.append(f"{r['receipt_id']}: hash {r['hash']} but rfc8785 gives {h}")
        if keys.get(r["issuer"]["service"]) != r["issuer"]["key_id"]:
            failures.append(f"{r['receipt_id']}: issuer key is not the published key")
        if not schnorr_verify(digest, bytes.fromhex(r["issuer"]["key_id"]), bytes.fromhex(r["signature"])):
            failures.append(f"{r['receipt_id']}: BIP340 signature does not verify")
    for c in checkpoints:
        service, note = c["service"], c["note"]
        body, sig_lines = note.split("\n\n", 1)
        body += "\n"
        origin, size, root_b64 = body.splitlines()
        prefix = "\u2014 " + service + " "
        if origin != "oa-receipts/" + service or not sig_lines.startswith(prefix):
            failures.append(f"checkpoint of {service}: bad origin or signature line")
            continue
        blob = base64.b64decode(sig_lines[len(prefix):].rstrip("\n"))
        key = bytes.fromhex(c["key_id"])
        hint = hashlib.sha256(service.encode() + b"\n\xff" + b"bip340-secp256k1" + key).digest()[:4]
        if blob[:4] != hint:
            failures.append(f"checkpoint of {service}: key hint mismatch")
        if not schnorr_verify(hashlib.sha256(body.encode()).digest(), key, blob[4:]):
            failures.append(f"checkpoint of {service}: signature does not verify")
        log = sorted((r for r in receipts if r["issuer"]["service"] == service), key=lambda r: int(r["log_index"]))
        leaves = [leaf_hash(bytes.fromhex(r["hash"][len("sha256:"):])) for r in log[: int(size)]]
        if base64.b64encode(mth(leaves)).decode() != root_b64:
            failures.append(f"checkpoint of {service}: root does not match the receipts")
    if len(sys.argv) > 2:
        with open(sys.argv[2], encoding="utf-8") as f:
            expected = json.load(f)
        for rid, want in expected["receipts"].items():
            got = computed.get(rid)
            if got != (want["canonical"], want["hash"]):
                failures.append(f"{rid}: hashes.json disagrees: {got} vs {want}")
    for msg in failures:
        print("FAIL", msg)
    if failures:
        sys.exit(1)
    print(f"OK: {len(receipts)} receipts, {len(checkpoints)} checkpoints")


main()
