#!/usr/bin/python3
"""DKIM signing and verification with dkimpy, for the interop tests.

    dkimpy_dkim.py sign KEY DOMAIN SELECTOR CANON LENGTH [HEADERS] < message > message
    dkimpy_dkim.py verify RECORDS < message          (prints {"pass": true|false})

KEY is a PEM private key: RSA as PKCS#1 (as dkimpy wants it), or Ed25519 as PKCS#8, whose last
32 bytes of DER are the seed dkimpy takes in base64. CANON is header/body (`relaxed/simple`).
LENGTH is 1 to sign with l= (the body length), 0 without. HEADERS, if given, is the h= list,
colon-separated. RECORDS is the JSON records file the Rust side reads too. Line ends are kept
as the input has them (LF for spool-style messages); the signature is added on top.
"""
import base64
import json
import sys

import dkim


def dnsfunc_for(path):
    with open(path) as f:
        records = json.load(f)
    records = {k.lower().rstrip("."): v for k, v in records.items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        value = records.get(name.lower().rstrip("."))
        if value is None:
            return None
        if isinstance(value, list):
            value = "".join(value)
        return value.encode()

    return dnsfunc


def main():
    cmd = sys.argv[1]
    message = sys.stdin.buffer.read()
    if cmd == "verify":
        ok = dkim.verify(message, dnsfunc=dnsfunc_for(sys.argv[2]))
        print(json.dumps({"pass": bool(ok)}))
        return
    if cmd != "sign":
        sys.exit("unknown command " + cmd)
    key, domain, selector, canon, length = sys.argv[2:7]
    include = [h.encode() for h in sys.argv[7].split(":")] if len(sys.argv) > 7 else None
    with open(key, "rb") as f:
        pem = f.read()
    algorithm = b"rsa-sha256"
    if b"BEGIN PRIVATE KEY" in pem:
        body = b"".join(l for l in pem.splitlines() if not l.startswith(b"-----"))
        pem = base64.b64encode(base64.b64decode(body)[-32:])
        algorithm = b"ed25519-sha256"
    head, body = canon.split("/")
    lf = b"\r\n" not in message.split(b"\n\n", 1)[0]
    wire = message.replace(b"\n", b"\r\n") if lf else message
    field = dkim.sign(wire, selector.encode(), domain.encode(), pem,
                      canonicalize=(head.encode(), body.encode()), include_headers=include,
                      length=length == "1", signature_algorithm=algorithm)
    if lf:
        field = field.replace(b"\r\n", b"\n")
    sys.stdout.buffer.write(field + message)


if __name__ == "__main__":
    main()
