"""QPACK oracle for h3::qpack's tests: ls-qpack (pylsqpack) with a dynamic
table capacity of 0, as the edge advertises.

One request per stdin line, one answer per stdout line, all bytes in hex:
  E name:value,name:value   -> the encoded field section
  D block                   -> name:value,... or "ERR <reason>"
"""
import sys

import pylsqpack


def fields(text):
    return [tuple(bytes.fromhex(x) for x in pair.split(":")) for pair in text.split(",") if pair]


def show(lines):
    return ",".join(f"{n.hex()}:{v.hex()}" for n, v in lines)


def main():
    for stream_id, line in enumerate(sys.stdin):
        op, _, arg = line.rstrip("\n").partition(" ")
        if op == "E":
            encoder = pylsqpack.Encoder()
            encoder.apply_settings(max_table_capacity=0, blocked_streams=0)
            _, block = encoder.encode(stream_id * 4, fields(arg))
            print(block.hex(), flush=True)
        else:
            decoder = pylsqpack.Decoder(0, 0)
            try:
                _, lines = decoder.feed_header(stream_id * 4, bytes.fromhex(arg))
                print(show(lines) or "-", flush=True)
            except Exception as e:  # the oracle's verdict, whatever its type
                print(f"ERR {type(e).__name__}", flush=True)


if __name__ == "__main__":
    main()
