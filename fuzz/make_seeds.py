#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/ from the django-cqrs messages captured in
tests/fixtures/django-cqrs/ and a few hand-written inputs. Run it again when the fixtures or the
fixed table of the `fuzzing` module of cqrs-orm-adapters change; the output is committed."""

import glob
import hashlib
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "django-cqrs")
SEEDS = os.path.join(HERE, "seeds")


def msgpack(value):
    """MessagePack of a JSON value, as rmp-serde writes it (maps with string keys)."""
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 128:
            return bytes([value])
        if -32 <= value < 0:
            return struct.pack("b", value)
        if 0 <= value < 2**64:
            return b"\xcf" + struct.pack(">Q", value)
        return b"\xd3" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode()
        if len(data) < 32:
            return bytes([0xA0 | len(data)]) + data
        return b"\xdb" + struct.pack(">I", len(data)) + data
    if isinstance(value, list):
        return b"\xdd" + struct.pack(">I", len(value)) + b"".join(map(msgpack, value))
    if isinstance(value, dict):
        out = b"\xdf" + struct.pack(">I", len(value))
        for k, v in value.items():
            out += msgpack(k) + msgpack(v)
        return out
    raise TypeError(type(value))


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(SEEDS, target)
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)


# A row of the fuzzing module's fixed table with every column in a valid form.
FULL_ROW = {
    "id": 7,
    "cqrs_revision": 3,
    "cqrs_updated": "2026-11-27 17:22:19.693959+00:00",
    "name": "Ada",
    "email": None,
    "birth_date": "1815-12-10",
    "rating": 9999.99,
    "publisher": 1,
    "tags": ["math"],
    "title": "Notes",
    "author": 1,
    "price": "9.99",
    "published": "1843-01-01",
    "extra": {"isbn": "978-0-00-000001-1"},
    "small": -3,
    "small_null": None,
    "flag": True,
    "flag_null": 0,
    "ratio": 0.5,
    "ratio_null": "1.25",
    "score": 1e-300,
    "score_null": None,
    "seen": "2026-11-27T17:22:19Z",
    "seen_null": "2026-11-27 17:22:19",
    "at_null": "2026-11-27T17:22:19.5+02:00",
    "opens": "09:30",
    "opens_null": "23:59:59.999999",
    "uid": "edc2b6a3-c70c-51ba-b720-8de87c839149",
    "status": "active",
}


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    bodies = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*.jsonl"))):
        with open(path) as f:
            bodies += [json.loads(line)["body"] for line in f if line.strip()]

    texts = set()
    for body in bodies:
        write("envelope_json", body)
        message = json.loads(body)
        write("envelope_msgpack", msgpack(message))
        texts.update(strings(message))
        data = dict(message["instance_data"])
        if isinstance(data.get("id"), str):  # a book: its UUID primary key goes to `uid`
            data["uid"] = data.pop("id")
        signal = {"SAVE": 0, "SYNC": 1, "DELETE": 2}[message["signal_type"]]
        write("instance_data", bytes([signal + 3]) + json.dumps(data).encode())
        write("instance_data", bytes([3]) + json.dumps({**FULL_ROW, **data}).encode())
    write("instance_data", bytes([0]) + json.dumps(FULL_ROW).encode())
    write("instance_data", bytes([7]) + json.dumps(FULL_ROW).encode())

    texts.update([
        "2026-11-28T17:08:25.5Z", "2026-11-28 17:08:25", "2026-11-28T17:08:25+0100",
        "2026-11-28T17:08", "2026-11-28", "12:30", "12:30:45.123456", "P1DT2H3M4.5S",
        "-PT1S", "PT0S", "P2W", "9.99", "-0.000001", "1e5", "1.5E-3",
        "EDC2B6A3C70C51BAB720 8DE87C839149".replace(" ", ""),
        "{edc2b6a3-c70c-51ba-b720-8de87c839149}", "42", " 42 ", "-9223372036854775808",
    ])
    for text in sorted(texts):
        if len(text) <= 80:
            write("values", text)
    for number in ["9.99", "-12.5", "1e300", "86400", "18446744073709551615", "true", "null"]:
        write("values", number)

    for url in [
        "amqp://guest:guest@localhost:5672/%2f",
        "amqps://svc:s3cr3t@broker.example:5671/vh?heartbeat=10&connection_timeout=5000",
        "amqp://svc:p%40ss%2Fw0rd@[::1]:5000/vh?connection_name=replica-1",
        "amqp://user@host/",
        "amqp://",
        "redis://:hunter22@127.0.0.1:6379/0",
        "rediss://svc:t0ps3cret@cache.example:6380/2?connection_timeout=250",
        "redis://svc@[::1]/1",
        "redis://localhost",
        "memory://fuzz",
        "redis+unix:///run/redis.sock?db=1&pass=pw",
        "amqp://svc:a%zzb@host/vh",
    ]:
        write("broker_url", url)

    for flt in [
        "{}",
        '{"id__in": [1, "2"], "name": "x"}',
        '{"pk__gte": 3, "author": null, "rating__lt": "9.5"}',
        '{"author__isnull": false, "id__in": []}',
        '{"name__contains": "50%_off!"}',
        '{"name__startswith": "A", "title__endswith": "z"}',
        '{"cqrs_updated__gt": "2026-11-27 17:22:19+00:00", "published__lte": "2000-01-01"}',
        '{"birth_date__lt": "2000-01-01", "opens": "09:30", "uid": "edc2b6a3-c70c-51ba-b720-8de87c839149"}',
        '{"flag": true, "ratio__gt": 0.5, "score__lt": "1e3", "small__in": [1, 2, 3]}',
        '{"price__gte": 9.99, "extra": 1, "publisher__in": [1, 2]}',
        '{"status": "active", "seen__lt": "2026-01-01T00:00:00"}',
    ]:
        write("cli_filter", flt)


if __name__ == "__main__":
    main()
