"""Hostile /invocations bodies, each at most 8 MiB (RICE_SERVING_MAX_BODY_BYTES), and what the
400 that refuses it says: the unit tests check the refusal and its memory, and
benchmarks/json_decode.py times it."""

from __future__ import annotations

RECTANGULAR = "must be a rectangular array of numbers shaped (N, H, W, 3)"
PIXEL = b"[[[[1,2,3]]]]"
NOT_JSON = "not valid JSON"
REPEATED = ('exactly one of "instances" or "inputs" holding raw RGB pixels shaped (N, H, W, 3); '
            "got keys: instances, instances")


def instances(value: bytes) -> bytes:
    return b'{"instances":' + value + b"}"


HOSTILE = {  # name: (the body, built when the test runs; what the 400 says)
    "not JSON": (lambda: b"{not json", NOT_JSON),
    "empty": (lambda: b"", NOT_JSON),
    "whitespace": (lambda: b" \r\n\t", NOT_JSON),
    "trailing garbage": (lambda: instances(PIXEL) + b" x", NOT_JSON),
    "two documents": (lambda: instances(PIXEL) + b'{"inputs":[]}', NOT_JSON),
    "trailing comma": (lambda: instances(b"[1,2,]"), NOT_JSON),
    "NaN": (lambda: instances(b"[[[[NaN,1,2]]]]"), NOT_JSON),
    "Infinity": (lambda: instances(b"[[[[Infinity,1,2]]]]"), NOT_JSON),
    "-Infinity": (lambda: instances(b"[[[[-Infinity,1,2]]]]"), NOT_JSON),
    "1e400": (lambda: instances(b"[[[[1e400,1,2]]]]"), NOT_JSON),
    "2**64": (lambda: instances(b"[[[[18446744073709551616,1,2]]]]"), NOT_JSON),
    "-2**63-1": (lambda: instances(b"[[[[-9223372036854775809,1,2]]]]"), NOT_JSON),
    "a 400-digit integer": (lambda: instances(b"[[[[" + b"9" * 400 + b",1,2]]]]"), NOT_JSON),
    "leading zeros": (lambda: instances(b"[[[[007,1,2]]]]"), NOT_JSON),
    "hex": (lambda: instances(b"[[[[0x1F,1,2]]]]"), NOT_JSON),
    "single quotes": (lambda: b"{'instances':[]}", NOT_JSON),
    "comment": (lambda: instances(b"[] /* x */"), NOT_JSON),
    "non-UTF-8 in a string": (lambda: b'{"instances":[], "x":"\xff\xfe"}', NOT_JSON),
    "non-UTF-8 outside": (lambda: instances(PIXEL) + b"\xff", NOT_JSON),
    "UTF-16": (lambda: '{"instances":[]}'.encode("utf-16"), NOT_JSON),
    "NUL byte": (lambda: instances(PIXEL) + b"\x00", NOT_JSON),
    "nested 100,000 deep": (lambda: instances(b"[" * 100_000 + b"]" * 100_000), NOT_JSON),
    "objects 100,000 deep": (lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, NOT_JSON),
    "nested 1,000 deep": (lambda: instances(b"[" * 1000 + b"]" * 1000), RECTANGULAR),
    "nested 64 deep": (lambda: instances(b"[" * 64 + b"]" * 64), "got shape [1, 1, 1,"),
    "duplicate key": (lambda: b'{"instances":' + PIXEL + b',"instances":' + PIXEL + b"}",
                      REPEATED),
    "instances and inputs": (lambda: b'{"inputs":' + PIXEL + b',"instances":' + PIXEL + b"}",
                             "got keys: inputs, instances"),
    "600,000 keys": (lambda: b"{" + b",".join(b'"k%06d":0' % i for i in range(600_000)) + b"}",
                     "got keys: k000000, k000001"),
    "many tiny arrays": (lambda: instances(b"[" + b"[]," * 2_500_000 + b"[]]"),
                         "got shape [2500001, 0]"),
    "many numbers": (lambda: instances(b"[" + b"0," * 4_000_000 + b"0]"), "got shape [4000001]"),
    "many ragged arrays": (lambda: instances(b"[" + b"[0],[]," * 1_100_000 + b"[0]]"),
                           RECTANGULAR),
}
