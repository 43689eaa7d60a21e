"""Produces one message (value read from a file) with an independent client and prints the
delivery result: "ok" or the broker's error name (e.g. INVALID_RECORD).

Usage: produce.py --bootstrap HOST:PORT --topic T --value-file PATH
"""

import argparse

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--value-file", required=True)
    args = ap.parse_args()
    with open(args.value_file, "rb") as f:
        value = f.read()
    result = []
    p = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "message.timeout.ms": 10000,
        }
    )
    p.produce(
        args.topic,
        value,
        on_delivery=lambda err, msg: result.append(err.name() if err else "ok"),
    )
    p.flush(15)
    print(result[0] if result else "no delivery report")


if __name__ == "__main__":
    main()
