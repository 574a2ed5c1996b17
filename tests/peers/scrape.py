#!/usr/bin/env python3
"""Scrapes a Prometheus endpoint over HTTP and parses it with the official
client library's parser (nobody here wrote either); prints one JSON object
{"name{label=value,...}": value}.

usage: scrape.py URL
"""
import json
import sys
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("prometheus-client is missing: pip install 'prometheus-client==0.26.0' (.ci/run does)")

with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    text = r.read().decode()
out = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
print(json.dumps(out))
