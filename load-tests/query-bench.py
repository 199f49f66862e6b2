#!/usr/bin/env python3
"""Times representative queries on Verdict (a running verdict-collector's query API over the
lake) and on DuckDB (the same Parquet files, equivalent SQL), side by side in one run, and
prints a table with the ratio Verdict / DuckDB per query (goal: <= 1.0). Results of the two
engines are compared too: a query whose answers differ is reported, not timed silently.

usage: query-bench.py LAKE_DIR COLLECTOR_URL [RUNS]
"""
import json
import statistics
import sys
import time
import urllib.request

import duckdb

lake, url = sys.argv[1], sys.argv[2].rstrip("/")
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3

# The generator's first hour is 2026-11-01T00:00Z; hour 5 is the time-range window.
T0, T1 = "2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z"
D0, D1 = "2026-11-01 05:00:00+00", "2026-11-01 06:00:00+00"

QUERIES = [
    (
        "filter: 1 h + namespace, 50 newest",
        ("entries", {
            "filter": f'timestamp >= "{T0}" timestamp < "{T1}" jsonPayload.dest.namespace = "payments"',
            "orderBy": "timestamp desc", "pageSize": 50}),
        f"SELECT * FROM policy_action WHERE timestamp >= '{D0}'::TIMESTAMPTZ_NS "
        f"AND timestamp < '{D1}'::TIMESTAMPTZ_NS AND dest_namespace = 'payments' "
        "ORDER BY timestamp DESC, insert_id DESC LIMIT 50",
    ),
    (
        "filter: regex on pod name, 50 newest",
        ("entries", {
            "filter": 'jsonPayload.src.pod_name =~ "^gateway-[0-9a-f]+-0"',
            "orderBy": "timestamp desc", "pageSize": 50}),
        "SELECT * FROM policy_action WHERE regexp_matches(src_pod_name, '^gateway-[0-9a-f]+-0') "
        "ORDER BY timestamp DESC, insert_id DESC LIMIT 50",
    ),
    (
        "SQL: 1 h + namespace, count",
        ("sql", f"SELECT count(*) AS n FROM policy_action WHERE \"timestamp\" >= '{T0}' "
                f"AND \"timestamp\" < '{T1}' AND dest_namespace = 'payments'"),
        f"SELECT count(*) AS n FROM policy_action WHERE timestamp >= '{D0}'::TIMESTAMPTZ_NS "
        f"AND timestamp < '{D1}'::TIMESTAMPTZ_NS AND dest_namespace = 'payments'",
    ),
    (
        "SQL: deny counts per namespace per hour",
        ("sql", "SELECT date_trunc('hour', \"timestamp\") AS hour, dest_namespace, "
                "count(*) AS records, sum(\"count\") AS connections FROM policy_action "
                "WHERE disposition = 'deny' GROUP BY 1, 2 ORDER BY 1, 2"),
        "SELECT epoch_ns(date_trunc('hour', timestamp::TIMESTAMPTZ)) AS hour, dest_namespace, "
        "count(*) AS records, sum(count) AS connections FROM policy_action "
        "WHERE disposition = 'deny' GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "SQL: allow counts per policy per hour",
        ("sql", "SELECT date_trunc('hour', ts) AS hour, p['namespace'] AS ns, p['name'] AS policy, "
                "count(*) AS records FROM (SELECT \"timestamp\" AS ts, unnest(policies) AS p FROM policy_action "
                "WHERE disposition = 'allow') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
        "SELECT epoch_ns(date_trunc('hour', ts::TIMESTAMPTZ)) AS hour, p.namespace AS ns, p.name AS policy, "
        "count(*) AS records FROM (SELECT timestamp AS ts, unnest(policies) AS p FROM policy_action "
        "WHERE disposition = 'allow') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    ),
    (
        "SQL: top talkers",
        ("sql", "SELECT src_namespace, src_workload_name, sum(\"count\") AS connections FROM policy_action "
                "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 10"),
        "SELECT src_namespace, src_workload_name, sum(count) AS connections FROM policy_action "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 10",
    ),
]


def post(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as r:
        return json.load(r)


def verdict(q):
    kind, body = q
    if kind == "entries":
        out = post("/v2/entries:list", body)
        return [e["insertId"] for e in out["entries"]]
    out = post("/v1/sql", {"query": body})
    return [r[0] if len(r) == 1 else tuple(r) for r in out["rows"]]


con = duckdb.connect()
con.execute("SET threads = 2")
con.execute(f"CREATE VIEW policy_action AS SELECT * FROM read_parquet('{lake}/policy_action/*/*/*.parquet', hive_partitioning = false)")


def duck(sql):
    # Arrow results (as the Arrow-native engines return them), turned into rows for comparing.
    t = con.execute(sql).to_arrow_table()
    if "insert_id" in t.column_names and t.num_columns > 1:
        return t.column("insert_id").to_pylist()
    cols = [c.to_pylist() for c in t.columns]
    return [r[0] if len(r) == 1 else tuple(r) for r in zip(*cols)]


def timed(fn):
    fn()  # warm-up: page cache and metadata, for both engines alike
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def comparable(rows):
    # Numbers as they print; hours are compared by count only (different encodings).
    return [tuple(str(v) for v in (r if isinstance(r, tuple) else (r,))) for r in rows]


records = duck("SELECT count(*) FROM policy_action")[0]
print(f"{records:,} records in {lake}; median of {runs} runs after one warm-up; 2 threads each\n")
print("| query | Verdict (s) | DuckDB (s) | ratio | rows | results |")
print("|---|---|---|---|---|---|")
for name, vq, dq in QUERIES:
    vt, vres = timed(lambda: verdict(vq))
    dt, dres = timed(lambda: duck(dq))
    if "per hour" in name:
        same = len(vres) == len(dres) and [r[1:] for r in comparable(vres)] == [r[1:] for r in comparable(dres)]
    else:
        same = comparable(vres) == comparable(dres)
    print(f"| {name} | {vt:.3f} | {dt:.3f} | {vt / dt:.2f} | {len(vres)} | {'same' if same else 'DIFFER'} |",
          flush=True)
