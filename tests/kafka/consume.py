"""Reads every message of some Kafka topics from the beginning with an independent client
(confluent-kafka) and decodes each value as a whole Avro container file with fastavro.

Prints one JSON line per message: {"topic", "partition", "offset", "key", "lists"}, where
"lists" holds the decoded MetricLists. A value that is not a MetricList container file is
printed with "error" instead. Stops once the topics have been idle for --idle seconds after at
least --min messages, or after --timeout seconds.

Usage: consume.py --bootstrap HOST:PORT --topics T1,T2 [--min N] [--idle S] [--timeout S]
"""

import argparse
import io
import json
import sys
import time

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition


def decode(value):
    reader = fastavro.reader(io.BytesIO(value))
    name = reader.writer_schema.get("name")
    if name != "dcos.metrics.MetricList":
        raise ValueError(f"writer schema is {name!r}")
    return list(reader)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topics", required=True)
    ap.add_argument("--min", type=int, default=1)
    ap.add_argument("--idle", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "corral-e2e",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    topics = [t for t in args.topics.split(",") if t]
    meta = consumer.list_topics(timeout=20)
    assignment = []
    for t in topics:
        tm = meta.topics.get(t)
        if tm is None or tm.error is not None:
            print(f"topic {t} missing: {tm and tm.error}", file=sys.stderr)
            sys.exit(2)
        for p in tm.partitions:
            assignment.append(TopicPartition(t, p, OFFSET_BEGINNING))
    consumer.assign(assignment)

    seen = 0
    start = time.monotonic()
    last = start
    while True:
        now = time.monotonic()
        if now - start > args.timeout:
            break
        if seen >= args.min and now - last > args.idle:
            break
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                continue
            raise KafkaException(msg.error())
        last = time.monotonic()
        seen += 1
        out = {
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": msg.key().decode() if msg.key() is not None else None,
        }
        try:
            out["lists"] = decode(msg.value())
        except Exception as e:  # reported to the test, which fails on it
            out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out), flush=True)
    consumer.close()
    print(f"consumed {seen} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
