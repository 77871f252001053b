#!/usr/bin/python3
"""ARC signing and verification with dkimpy, for the interop tests.

    dkimpy_arc.py sign RECORDS KEY DOMAIN SELECTOR SRV_ID CV TIMESTAMP [HEADERS] < message > message
    dkimpy_arc.py verify RECORDS < message          (prints {"cv": ..., "reason": ...})

RECORDS is the JSON records file the Rust side reads too (name -> TXT string or array of
strings). KEY is a PEM RSA private key (PKCS#1, as dkimpy wants it). CV is the chain status the
signer vouches for: none, pass, fail, or auto (dkimpy's own arc_verify of the incoming message).
dkimpy takes cv from an Authentication-Results field with SRV_ID, so one is added before signing.
HEADERS, if given, is the AMS h= list, colon-separated (dkimpy's default otherwise); the new
set's own ARC-Authentication-Results is already in the header block when the AMS is computed, so
listing that field signs it (the AAR lowest in the block, by DKIM's bottom-up selection).
Line ends are kept as the input has them (LF for spool-style messages).
"""
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


def verify(records, message):
    cv, _results, reason = dkim.arc_verify(message, dnsfunc=dnsfunc_for(records))
    return (cv.decode() if cv is not None else None), reason


def main():
    cmd = sys.argv[1]
    message = sys.stdin.buffer.read()
    if cmd == "verify":
        cv, reason = verify(sys.argv[2], message)
        print(json.dumps({"cv": cv, "reason": reason}))
        return
    if cmd != "sign":
        sys.exit("unknown command " + cmd)
    records, key, domain, selector, srv_id, cv, timestamp = sys.argv[2:9]
    include = [h.encode() for h in sys.argv[9].split(":")] if len(sys.argv) > 9 else None
    if cv == "auto":
        cv, _ = verify(records, message)
        cv = cv or "fail"
    lf = b"\r\n" not in message.split(b"\n\n", 1)[0]
    nl = b"\n" if lf else b"\r\n"
    ar = ("Authentication-Results: %s; arc=%s" % (srv_id, cv)).encode() if cv != "none" else (
        "Authentication-Results: %s; none" % srv_id).encode()
    message = ar + nl + message
    with open(key, "rb") as f:
        pem = f.read()
    fields = dkim.arc_sign(message, selector.encode(), domain.encode(), pem, srv_id.encode(),
                           include_headers=include, timestamp=int(timestamp))
    if not fields:
        sys.exit("dkimpy produced no ARC set")
    out = b"".join(fields)
    if lf:
        out = out.replace(b"\r\n", b"\n")
    sys.stdout.buffer.write(out + message)


if __name__ == "__main__":
    main()
