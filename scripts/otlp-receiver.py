#!/usr/bin/env python3
"""An OTLP/HTTP profiles receiver built on PyPI's opentelemetry-proto: a second
reader of what `flamebpf continuous --export http://…/v1development/profiles`
sends, independent of the Rust crate the exporter and the test suite use.

    python3 -m venv /tmp/otel && /tmp/otel/bin/pip install opentelemetry-proto==1.45.2
    /tmp/otel/bin/python scripts/otlp-receiver.py 4318 received.json &
    sudo flamebpf continuous --window 1 --dir /tmp/store \
        --export http://127.0.0.1:4318/v1development/profiles -- COMMAND

Each window's `samples` profile is summed and written to the JSON file (start,
total, service.name, the ten heaviest stacks); the totals add up to the
daemon's count of samples.
"""
import gzip
import http.server
import json
import sys

from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as service,
)

received = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = service.ExportProfilesServiceRequest.FromString(body)
        d = request.dictionary
        # the protocol's zero values at index 0
        assert d.string_table[0] == "" and not d.stack_table[0].location_indices
        rp = request.resource_profiles[0]
        name = [a.value.string_value for a in rp.resource.attributes if a.key == "service.name"]
        for p in rp.scope_profiles[0].profiles:
            if d.string_table[p.sample_type.type_strindex] != "samples":
                continue
            stacks = {}
            for s in p.samples:
                frames = []
                for loc in reversed(d.stack_table[s.stack_index].location_indices):
                    for line in reversed(d.location_table[loc].lines):
                        f = d.function_table[line.function_index]
                        frames.append(d.string_table[f.name_strindex])
                key = ";".join(frames)
                stacks[key] = stacks.get(key, 0) + s.values[0]
            heaviest = sorted(stacks.items(), key=lambda kv: -kv[1])[:10]
            received.append(
                {
                    "start_ms": p.time_unix_nano // 1_000_000,
                    "total": sum(stacks.values()),
                    "service": name[0] if name else "",
                    "heaviest": heaviest,
                }
            )
        with open(sys.argv[2], "w") as out:
            json.dump(received, out, indent=1)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
