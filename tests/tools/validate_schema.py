#!/usr/bin/python3
"""Validates JSON documents (one per line) against a JSON Schema.

Usage: validate_schema.py SCHEMA FILE.jsonl
Uses the independent `jsonschema` package (Debian python3-jsonschema), not
twin-engine code. Exits 1 and prints the first errors if any document fails,
or if the file holds no document at all.
"""
import json
import sys

import jsonschema


def main():
    schema = json.load(open(sys.argv[1]))
    validator = jsonschema.Draft202012Validator(schema)
    n = bad = 0
    for line in open(sys.argv[2]):
        line = line.strip()
        if not line:
            continue
        n += 1
        doc = json.loads(line)
        errors = list(validator.iter_errors(doc))
        if errors:
            bad += 1
            if bad <= 3:
                for e in errors[:3]:
                    print(f"{doc.get('_id')}: {'/'.join(map(str, e.absolute_path))}: {e.message}", file=sys.stderr)
    print(f"schema: {n} documents, {bad} invalid")
    sys.exit(1 if bad or n == 0 else 0)


main()
