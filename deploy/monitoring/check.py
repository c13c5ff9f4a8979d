#!/usr/bin/env python3
"""Helpers of deploy/monitoring/check.sh (Python 3 standard library only).

Subcommands:
  dashboard DASHBOARD OUT_DIR          validate the dashboard's structure; write its PromQL
                                       expressions (Grafana variables substituted) to
                                       OUT_DIR/dashboard-exprs.json and as recording rules to
                                       OUT_DIR/dashboard-rules.yml for `promtool check rules`
  names METRICS DASHBOARD ALERTS       compare every metric name, label and closed-set label value
                                       used by the dashboard and the alert rules with a scrape of
                                       a running proxy's /metrics (METRICS: the scraped text)
  selftest METRICS DASHBOARD ALERTS    mutate the dashboard and the rules (misspelt metric,
                                       unknown label or label value, ...): `names` must fail
  upstream PORT                        a loopback upstream that answers 200 to every request
  traffic PROXY_ADDR ROOT              send accepted, rejected, pass-through and spoofed requests
  prometheus PROM_URL OUT_DIR DEADLINE poll a real Prometheus until its query API returns the
                                       proxy's series, every dashboard expression evaluates, and
                                       the alert rules are loaded and healthy
"""

import base64
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

# The tests' app (tests/harness/lib.rs) and Entra's global redirect_uri.
CLIENT_ID = "56c2b5e3-c41d-4c14-abcf-72d407f57650"
AUDIENCE = "600b719b-3766-4dc5-95a6-3c4a8dc31885"
TENANT_ID = "14c2f153-90a7-4689-9db7-9543bf084dad"
OID = "951ddb04-b16d-45f3-bbf7-b0fa18fa7aee"
SUB = "mBfcvuhSHkDWVgV72x2ruIYdSsPSvcj2R0qfc6mGEAA"
REDIRECT_URI = "https://login.microsoftonline.com/common/federation/externalauthprovider"

# Grafana's variables, as the check substitutes them.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${job}": ".*",
    "${instance}": ".*",
    "${cloud}": ".*",
    "$job": ".*",
    "$instance": ".*",
    "$cloud": ".*",
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Series Prometheus itself synthesises; allowed in alert rules only.
SYNTHETIC = {"up"}
PROMQL_WORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2",
}

failures = []


def fail(message):
    failures.append(message)


def finish(what):
    sys.stdout.flush()
    if failures:
        for message in failures:
            print(f"  FAIL {message}", file=sys.stderr)
        print(f"{what}: {len(failures)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print(f"{what}: ok")


def substitute(expr):
    for name in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARS[name])
    return expr


# --------------------------------------------------------------------------- dashboard


def dashboard_queries(dashboard, legends=False):
    """(where, raw expression[, legend format]) for every panel target, nested rows included."""
    out = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                item = (f'panel {panel.get("id")} "{panel.get("title")}" '
                        f'target {target.get("refId")}', target.get("expr", ""))
                out.append(item + (target.get("legendFormat", ""),) if legends else item)

    walk(dashboard.get("panels", []))
    return out


def variable_queries(dashboard):
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            out.append((f'variable {var.get("name")}', query or var.get("definition", "")))
    return out


def cmd_dashboard(path, out_dir):
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)  # a JSON syntax error ends the check here
    schema = dashboard.get("schemaVersion")
    if not isinstance(schema, int) or not 36 <= schema <= 41:
        fail(f"schemaVersion {schema!r}: expected a Grafana 9/10/11 schema (36..41)")
    for key in ("title", "uid", "panels", "templating"):
        if key not in dashboard:
            fail(f"dashboard has no {key}")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail("no `datasource` variable of type datasource for Prometheus")
    cloud = variables.get("cloud")
    if not cloud or cloud.get("type") != "query":
        fail("no `cloud` query variable")
    for name, var in variables.items():
        if var.get("type") == "query" and var.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"variable {name} does not use ${{datasource}}")

    ids = set()
    panel_count = 0

    def walk(panels):
        nonlocal panel_count
        for panel in panels:
            walk(panel.get("panels", []))
            pid = panel.get("id")
            if pid in ids:
                fail(f"duplicate panel id {pid}")
            ids.add(pid)
            grid = panel.get("gridPos", {})
            if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) \
                    or grid.get("x", 0) + grid.get("w", 0) > 24:
                fail(f"panel {pid} has a bad gridPos {grid}")
            if panel.get("type") == "row":
                continue
            panel_count += 1
            if panel.get("datasource", {}).get("uid") != "${datasource}":
                fail(f'panel {pid} "{panel.get("title")}" does not use ${{datasource}}')
            targets = panel.get("targets", [])
            if not targets:
                fail(f'panel {pid} "{panel.get("title")}" has no query')
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs):
                fail(f"panel {pid} repeats a refId")
            for target in targets:
                if target.get("datasource", {}).get("uid") != "${datasource}":
                    fail(f"panel {pid} target {target.get('refId')} does not use ${{datasource}}")
                if not target.get("expr", "").strip():
                    fail(f"panel {pid} target {target.get('refId')} has no expr")

    walk(dashboard.get("panels", []))

    queries = [(where, substitute(expr), legend)
               for where, expr, legend in dashboard_queries(dashboard, legends=True)]
    leftover = [(w, e) for w, e, _ in queries if "$" in e]
    for where, expr in leftover:
        fail(f"{where}: unknown Grafana variable left in {expr}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "dashboard-exprs.json"), "w", encoding="utf-8") as f:
        json.dump([{"where": w, "expr": e, "legend": l} for w, e, l in queries], f, indent=1)
    # Recording rules only so that `promtool check rules` parses every expression.
    with open(os.path.join(out_dir, "dashboard-rules.yml"), "w", encoding="utf-8") as f:
        f.write("groups:\n  - name: dashboard-expressions\n    rules:\n")
        for i, (where, expr, _) in enumerate(queries):
            f.write(f"      # {where}\n      - record: dashboard:expr_{i}\n"
                    f"        expr: {json.dumps(expr)}\n")
    print(f"  {panel_count} panels, {len(queries)} queries, "
          f"{len(variable_queries(dashboard))} query variables")
    finish("dashboard structure")


# --------------------------------------------------------------------------- names


def parse_scrape(text):
    """{metric name: {label: set(values)}} and {family: type} from the text format."""
    series, types = {}, {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            continue
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        if not m:
            fail(f"unparsable /metrics line: {line}")
            continue
        labels = series.setdefault(m.group(1), {})
        for k, v in label.findall(m.group(3) or ""):
            labels.setdefault(k, set()).add(v)
    return series, types


def alert_exprs(text):
    """(where, expr) of every rule in a Prometheus rules file, without a YAML library: the
    file's `expr:` values are either one line or a `|` block."""
    lines = text.splitlines()
    out, name = [], "?"
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*-?\s*(alert|record):\s*(\S+)", line)
        if m:
            name = m.group(2)
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", "|-", ">", ">-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip()
                                          or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((f"rule {name}", " ".join(block)))
                continue
            if value.startswith('"'):
                value = json.loads(value)
            out.append((f"rule {name}", value))
        i += 1
    rules = sum(1 for line in lines if re.match(r"^\s*-\s*(alert|record):", line))
    if rules != len(out):
        fail(f"{rules} rules but {len(out)} expressions read: keep `expr:` on one line or in a "
             f"`|` block")
    return out


SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}')
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
IDENT = re.compile(r'(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()')


def used(expr):
    """(metric names, [(metric, label, op, value)], {function: [metric]}) of `expr`. The metric
    of a grouping label (`by (x)`, `on (x)`) is "*": any metric of the expression."""
    matchers = []
    for m in SELECTOR.finditer(expr):
        for lm in MATCHER.finditer(m.group(2)):
            matchers.append((m.group(1), lm.group(1), lm.group(2), lm.group(3)))
    # label_values(metric{...}, label) in variable queries.
    lv = re.match(r'^\s*label_values\(\s*([a-zA-Z_:][\w:]*)?\s*(\{[^}]*\})?\s*,\s*(\w+)\s*\)\s*$',
                  expr)
    if lv:
        names = {lv.group(1)} if lv.group(1) else set()
        matchers.append((lv.group(1), lv.group(3), "label", ""))
        return names, matchers, {}
    stripped = re.sub(r'\{[^}]*\}', " ", expr)
    stripped = re.sub(r'\[[^\]]*\]', " ", stripped)
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', " ", stripped)
    grouping = set()
    for clause in re.findall(r'\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)',
                             expr):
        grouping |= {g.strip() for g in clause.split(",") if g.strip()}
    stripped = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', " ",
                      stripped)
    names = {n for n in IDENT.findall(stripped) if n.lower() not in PROMQL_WORDS}
    for label in sorted(grouping):
        matchers.append(("*", label, "group", ""))
    ranged = {}
    for fn, metric in re.findall(r'\b(rate|irate|increase|delta|deriv)\s*\(\s*([a-zA-Z_:][\w:]*)',
                                 expr):
        ranged.setdefault(fn, []).append(metric)
    return names, matchers, ranged


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count", ""):
        if suffix and not name.endswith(suffix):
            continue
        base = name[: len(name) - len(suffix)] if suffix else name
        if base in types:
            return base, types[base]
    return name, None


def check_names(metrics_text, dashboard, alerts_text, verbose=True):
    series, types = parse_scrape(metrics_text)
    if verbose:
        print(f"  /metrics exports {len(types)} families, {len(series)} sample names")
    sources = [("dashboard", w, substitute(e)) for w, e in dashboard_queries(dashboard)]
    sources += [("dashboard", w, substitute(e)) for w, e in variable_queries(dashboard)]
    sources += [("alerts", w, e) for w, e in alert_exprs(alerts_text)]
    if not any(src == "alerts" for src, _, _ in sources):
        fail("no alert rule expressions found")
    dashboard_names = set()
    checked = 0
    for src, where, expr in sources:
        names, matchers, ranged = used(expr)
        allowed = set(series) | (SYNTHETIC if src == "alerts" else set())
        for name in names:
            checked += 1
            if name not in allowed:
                fail(f"{src} {where}: metric {name} is not exported (expr: {expr})")
            if src == "dashboard":
                dashboard_names.add(name)
        for metric, label, op, value in matchers:
            checked += 1
            if metric == "*":
                known = set().union(*[set(series.get(n, {})) for n in names]) | TARGET_LABELS
                if label not in known:
                    fail(f"{src} {where}: no metric of the expression has the grouping label "
                         f"{label} (expr: {expr})")
                continue
            if metric is None or metric in SYNTHETIC:
                known = set().union(*[set(l) for l in series.values()]) | TARGET_LABELS
                values = set().union(*[l.get(label, set()) for l in series.values()])
            else:
                known = set(series.get(metric, {})) | TARGET_LABELS
                values = series.get(metric, {}).get(label, set())
            if label not in known:
                fail(f"{src} {where}: {metric} has no label {label} (expr: {expr})")
                continue
            if label in TARGET_LABELS or "$" in value or op in ("label", "!=", "!~"):
                continue
            wanted = [value] if op == "=" else (
                value.split("|") if re.fullmatch(r"[\w|]+", value) else [])
            for v in wanted:
                if v not in values:
                    fail(f"{src} {where}: {metric}{{{label}=\"{v}\"}} matches no exported value "
                         f"(exported: {sorted(values)})")
        for fn, metrics in ranged.items():
            for metric in metrics:
                family, kind = family_of(metric, types)
                if kind == "gauge":
                    fail(f"{src} {where}: {fn}() over the gauge {metric}")
    # Every eam_* family the proxy exports is on the dashboard.
    shown = {family_of(n, types)[0] for n in dashboard_names}
    for family in sorted(types):
        if family.startswith("eam_") and family not in shown:
            fail(f"dashboard shows nothing of {family}")
    for family in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                   "process_open_fds"):
        if family not in shown:
            fail(f"dashboard shows nothing of {family}")
    if verbose:
        print(f"  {len(sources)} expressions, {checked} metric and label references checked")


def cmd_names(metrics_path, dashboard_path, alerts_path):
    check_names(open(metrics_path, encoding="utf-8").read(),
                json.load(open(dashboard_path, encoding="utf-8")),
                open(alerts_path, encoding="utf-8").read())
    finish("metric names")


# Each mutation must make check_names fail: the name check is not vacuous.
MUTATIONS = [
    ("dashboard", "eam_jwks_keys{", "eam_jwks_key{", "misspelt metric"),
    ("dashboard", 'outcome=\\"rejected\\"', 'outcome=\\"reject\\"', "unknown outcome"),
    ("dashboard", 'class=~\\"5xx|error\\"', 'class=~\\"5xx|err\\"', "unknown class in a regex"),
    ("dashboard", "by (reason)", "by (reasons)", "unknown grouping label"),
    ("dashboard", "rate(process_cpu_seconds_total", "rate(process_open_fds", "rate() of a gauge"),
    ("dashboard", "sum(rate(eam_spoofed_params_removed_total", "sum(rate(eam_requests_total",
     "a documented metric missing from the dashboard"),
    ("dashboard", "label_values(eam_jwks_keys{", "label_values(eam_jwks_keyz{",
     "misspelt metric in a variable"),
    ("alerts", 'route="authorize", outcome="rejected"', 'route="authorise", outcome="rejected"',
     "unknown route in a rule"),
    ("alerts", "eam_jwks_age_seconds > 86400", "eam_jwks_age > 86400", "misspelt metric in a rule"),
    ("alerts", "on (job, instance, cloud)", "on (job, instance, clouds)",
     "unknown label in a rule's on()"),
    ("alerts", "rate(eam_upstream_responses_total[5m])", "rate(eam_upstream_response_total[5m])",
     "misspelt metric without braces"),
]


def cmd_selftest(metrics_path, dashboard_path, alerts_path):
    metrics = open(metrics_path, encoding="utf-8").read()
    originals = {"dashboard": open(dashboard_path, encoding="utf-8").read(),
                 "alerts": open(alerts_path, encoding="utf-8").read()}
    caught = 0
    for which, old, new, what in MUTATIONS:
        texts = dict(originals)
        if old not in texts[which]:
            fail(f"mutation '{what}': {old!r} not found in the {which}")
            continue
        texts[which] = texts[which].replace(old, new)
        before = len(failures)
        check_names(metrics, json.loads(texts["dashboard"]), texts["alerts"], verbose=False)
        found = failures[before:]
        del failures[before:]
        if found:
            caught += 1
            print(f"  caught {what}: {found[0]}")
        else:
            fail(f"mutation '{what}' was not detected")
    print(f"  {caught} of {len(MUTATIONS)} mutations caught")
    finish("name check self-test")


# --------------------------------------------------------------------------- traffic


class Always200(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b"upstream ok\n"
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = answer

    def log_message(self, *args):
        pass


def cmd_upstream(port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Always200)
    server.serve_forever()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_hint(pem, kid):
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "kid": kid}
    claims = {"ver": "2.0", "iss": f"https://login.microsoftonline.com/{TENANT_ID}/v2.0",
              "sub": SUB, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
              "oid": OID, "tid": TENANT_ID, "name": "Monitoring Check",
              "preferred_username": "monitoring@example.com"}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", pem],
                               input=signing_input.encode(), capture_output=True,
                               check=True).stdout
    return signing_input + "." + b64url(signature)


def request(addr, method, path, body=None, headers=None):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def entra_form(hint, n):
    return urllib.parse.urlencode([
        ("scope", "openid"), ("response_type", "id_token"), ("response_mode", "form_post"),
        ("client_id", CLIENT_ID), ("redirect_uri", REDIRECT_URI), ("nonce", f"nonce-{n}"),
        ("state", f"state-{n}"), ("client-request-id", f"00000000-0000-4000-8000-00000000000{n}"),
        ("id_token_hint", hint),
    ])


def cmd_traffic(addr, root):
    keys = os.path.join(root, "tests", "fixtures", "keys")
    form = {"content-type": "application/x-www-form-urlencoded"}
    sent = []
    # Accepted: signed by the fixture key that plays Microsoft's.
    status, body = request(addr, "POST", "/authorize",
                           entra_form(sign_hint(os.path.join(keys, "signer.pem"), "signer"), 1),
                           form)
    sent.append(("accepted Entra POST", status, status == 200))
    # Rejected: an attacker's key under Microsoft's kid (bad_signature), answered by form_post.
    status, body = request(addr, "POST", "/authorize",
                           entra_form(sign_hint(os.path.join(keys, "foreign.pem"), "signer"), 2),
                           form)
    sent.append(("rejected Entra POST", status, b"invalid_request" in body))
    # Not Entra, with two spoofed reserved parameters: passed, spoofed counter moves.
    status, _ = request(addr, "GET", "/authorize?client_id=other&entra_sub=evil&ENTRA_oid=x")
    sent.append(("pass-through authorize with spoofed parameters", status, status == 200))
    for path in ["/token", "/jwks", "/.well-known/openid-configuration"]:
        status, _ = request(addr, "GET", path)
        sent.append((f"GET {path}", status, status == 200))
    for what, status, ok in sent:
        print(f"  {what}: {status}")
        if not ok:
            fail(f"{what}: unexpected answer {status}")
    finish("traffic")


# --------------------------------------------------------------------------- prometheus


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def api(prom, path):
    with urllib.request.urlopen(f"{prom}{path}", timeout=10) as response:
        return json.load(response)


def value_of(result, **labels):
    for item in result:
        if all(item["metric"].get(k) == v for k, v in labels.items()):
            return float(item["value"][1])
    return None


def cmd_prometheus(prom, out_dir, deadline_s):
    deadline = time.monotonic() + float(deadline_s)
    exprs = json.load(open(os.path.join(out_dir, "dashboard-exprs.json"), encoding="utf-8"))
    started = time.monotonic()
    stage = "eam_requests_total"
    last = ""
    while True:
        try:
            problems = []
            # 1. The proxy's series, with the counts of the traffic sent.
            r = query(prom, "eam_requests_total")
            if r["status"] != "success" or not r["data"]["result"]:
                problems.append(f"eam_requests_total: {r.get('status')}, "
                                f"{len(r.get('data', {}).get('result', []))} series")
            else:
                if stage == "eam_requests_total":
                    print(f"  eam_requests_total: {len(r['data']['result'])} series after "
                          f"{time.monotonic() - started:.1f} s")
                    stage = "values"
                res = r["data"]["result"]
                want = [(("authorize", "accepted"), 1), (("authorize", "rejected"), 1),
                        (("authorize", "passed"), 1), (("other", "proxied"), 3)]
                for (route, outcome), n in want:
                    v = value_of(res, route=route, outcome=outcome)
                    if v is None or v < n:
                        problems.append(f"eam_requests_total{{route={route},outcome={outcome}}}"
                                        f" = {v}, want >= {n}")
                checks = [
                    ('eam_hint_rejections_total{reason="bad_signature"}', 1),
                    ("eam_spoofed_params_removed_total", 2),
                    ('eam_jwks_keys{cloud="global"}', 2),
                    ('eam_upstream_responses_total{class="2xx"}', 5),
                    ('eam_hint_validation_seconds_count', 2),
                ]
                for expr, n in checks:
                    res = query(prom, expr)["data"]["result"]
                    v = float(res[0]["value"][1]) if res else None
                    if v is None or v < n:
                        problems.append(f"{expr} = {v}, want >= {n}")
            # 2. Every dashboard expression evaluates, with data.
            if not problems:
                for item in exprs:
                    res = query(prom, item["expr"])
                    if res["status"] != "success":
                        problems.append(f"{item['where']}: {res}")
                    elif not res["data"]["result"]:
                        problems.append(f"{item['where']}: empty result for {item['expr']}")
                    else:
                        # Every {{label}} of the legend is a label of every series returned.
                        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", item["legend"]):
                            for series in res["data"]["result"]:
                                if label not in series["metric"]:
                                    problems.append(f"{item['where']}: legend {{{{{label}}}}} but "
                                                    f"the result has {series['metric']}")
                                    break
            # 3. The alert rules are loaded, evaluated and healthy; the dead target of the job
            #    makes EamProxyDown pending, nothing fires for the healthy proxy.
            if not problems:
                groups = api(prom, "/api/v1/rules")["data"]["groups"]
                rules = [rule for g in groups for rule in g["rules"]]
                if not rules:
                    problems.append("no alert rules loaded")
                for rule in rules:
                    if rule.get("health") != "ok":
                        problems.append(f"rule {rule['name']}: health {rule.get('health')} "
                                        f"{rule.get('lastError', '')}")
                alerts = api(prom, "/api/v1/alerts")["data"]["alerts"]
                down = [a for a in alerts if a["labels"].get("alertname") == "EamProxyDown"]
                if len(down) != 1 or down[0]["state"] != "pending":
                    problems.append(f"EamProxyDown for the dead target: {down}")
                firing = [a["labels"].get("alertname") for a in alerts if a["state"] == "firing"]
                if firing:
                    problems.append(f"alerts firing against a healthy proxy: {firing}")
                others = [a["labels"].get("alertname") for a in alerts
                          if a["labels"].get("alertname") != "EamProxyDown"]
                if others:
                    problems.append(f"unexpected alerts: {others}")
            if not problems:
                print(f"  eam_requests_total and the traffic's counters visible, "
                      f"{len(exprs)} dashboard queries with data, {len(rules)} rules healthy, "
                      f"EamProxyDown pending for the dead target, after "
                      f"{time.monotonic() - started:.1f} s")
                break
            last = "; ".join(problems)
        except Exception as e:  # Prometheus not up yet, or a transient error
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            fail(f"Prometheus did not show everything within {deadline_s} s: {last}")
            break
        time.sleep(1)
    finish("prometheus end to end")


def main():
    args = sys.argv[1:]
    commands = {"dashboard": (cmd_dashboard, 2), "names": (cmd_names, 3),
                "selftest": (cmd_selftest, 3), "upstream": (cmd_upstream, 1), "traffic": (cmd_traffic, 2),
                "prometheus": (cmd_prometheus, 3)}
    if not args or args[0] not in commands or len(args) - 1 != commands[args[0]][1]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    commands[args[0]][0](*args[1:])


if __name__ == "__main__":
    main()
