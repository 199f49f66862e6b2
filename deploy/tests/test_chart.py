"""The Helm chart, rendered by Helm's own engine (deploy/render_chart.py), then checked.

- Every rendered object is valid for each Kubernetes minor GKE offers (kubernetes-validate's
  bundled schemas, strict: unknown fields are errors); the NetworkLogging object is checked
  against the chart's own CRD schema.
- Security policy on what would run: no privileged container, capabilities only those listed
  (and why) below, read-only root filesystems, no privilege escalation, requests and limits on
  every container, the collector non-root, host namespaces and host paths only for the agent.
- Wiring: every flag the chart passes exists in the binaries (their --help), the collector's
  rendered configuration loads in the real collector, the values schema refuses bad values.
- The kustomize base is the chart rendered with deploy/kustomize/base-values.yaml, and
  `kubectl kustomize` builds it.

Run: python3 -m unittest discover -s deploy/tests -v (scripts/test.sh does, after the Rust tests
have built the binaries).
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib
import unittest

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/verdict"
sys.path.insert(0, str(ROOT / "deploy"))
import render_chart  # noqa: E402

# GKE's release channels in late 2026 span these minors (rapid to extended).
KUBERNETES_VERSIONS = ["1.31", "1.32", "1.33", "1.34", "1.35"]
# The capabilities each container may hold: the probe loads eBPF programs, pins maps and attaches
# TC filters (BPF, NET_ADMIN, PERFMON); the uninstaller detaches and unpins (BPF, NET_ADMIN); the
# shipper needs none. (ebpf-probe/tests/kernel.rs runs the probe with exactly these.)
ALLOWED_CAPABILITIES = {
    "probe": {"BPF", "NET_ADMIN", "PERFMON"},
    "uninstall": {"BPF", "NET_ADMIN"},
    "shipper": set(),
    "collector": set(),
}
AGENT_HOST_PATHS = {"/sys/fs/bpf", "/var/log/network", "/var/lib/verdict/shipper", "/var/log"}
# Kinds of optional integrations whose schemas are not bundled (checked structurally here).
EXTERNAL_KINDS = {"Certificate", "Issuer", "ServiceMonitor", "PodMonitor", "PrometheusRule"}

VARIANTS = {
    "defaults": [],
    "cert-manager": ["tls.source=cert-manager"],
    "own TLS secret": ["tls.source=secret", "tls.existingSecret=my-tls"],
    "object storage": [
        "collector.storageUrl=s3://flows/verdict",
        "collector.storageOptions.aws_region=eu-west-1",
        "collector.storageCredentialsSecret=verdict-s3",
    ],
    "iptables from kern.log": ["agent.iptables.enabled=true", "agent.iptables.postEvents=true"],
    "iptables from syslog": ["agent.iptables.enabled=true", "agent.iptables.logPath=/var/log/syslog"],
    "audit with uplinks": ["agent.mode=audit", "agent.uplinks={eth0,eth1}"],
    "monitoring": [
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.grafanaDashboards.enabled=true",
    ],
    "uninstall": ["agent.uninstall=true"],
    "restricted ingest": ["collector.networkPolicy.ingestFrom={10.128.0.0/20}"],
}


def render(sets=(), files=(), include_crds=True):
    return [d for d in yaml.safe_load_all(render_chart.render(sets, files, include_crds=include_crds)) if d]


def containers(objs):
    for o in objs:
        spec = o.get("spec", {}).get("template", {}).get("spec")
        if spec:
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield o, spec, c


def metric_names(expr):
    """The metric names a PromQL expression reads: not functions, label names (matchers,
    grouping), keywords, durations, or series the rules record themselves (`level:name:op`)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        n = m.group(0)
        if ":" in n or n in ("and", "or", "unless", "offset", "bool") or e[m.end():].lstrip().startswith("("):
            continue
        names.add(n)
    return names


def binary(name):
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / "debug" / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: build it first (cargo build -p ... ; scripts/test.sh runs cargo test before this)")
    return path


class Rendering(unittest.TestCase):
    def test_every_variant_is_valid_for_every_supported_kubernetes(self):
        crd = next(o for o in render() if o["kind"] == "CustomResourceDefinition")
        cr_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for variant, sets in VARIANTS.items():
            objs = render(sets)
            self.assertTrue(objs, variant)
            for o in objs:
                name = f"{variant}: {o['kind']}/{o['metadata']['name']}"
                if o["kind"] == "NetworkLogging":
                    jsonschema.validate(o, cr_schema)
                    continue
                if o["kind"] in EXTERNAL_KINDS:
                    self.assertIn("spec", o, name)
                    continue
                for v in KUBERNETES_VERSIONS:
                    with self.subTest(object=name, kubernetes=v):
                        kubernetes_validate.validate(o, v, strict=True)

    def test_the_default_install_has_every_part(self):
        kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render())
        for want in [
            ("CustomResourceDefinition", "networkloggings.networking.gke.io"),
            ("DaemonSet", "verdict-agent"),
            ("StatefulSet", "verdict-collector"),
            ("Service", "verdict-collector"),
            ("PodDisruptionBudget", "verdict-collector"),
            ("NetworkPolicy", "verdict-collector"),
            ("ClusterRole", "verdict-agent"),
            ("ClusterRole", "verdict-collector"),
            ("NetworkLogging", "default"),
            ("Secret", "verdict-collector-tls"),
            ("Secret", "verdict-query-token"),
            ("ResourceQuota", "verdict-agent-priority"),
        ]:
            self.assertIn(want, kinds)

    def test_names_fit_kubernetes_limits_for_long_release_names(self):
        objs = yaml.safe_load_all(render_chart.render(release="payments-platform-network-verdict-prod-eu"))
        for o in (o for o in objs if o):
            name = o["metadata"]["name"]
            self.assertLessEqual(len(name), 63, name)
            if o["kind"] == "StatefulSet":
                self.assertLessEqual(len(name), 52, name)  # + the revision hash in a label

    def test_the_kernel_log_folder_is_mounted_so_rotations_are_followed(self):
        objs = render(VARIANTS["iptables from syslog"])
        ds = next(o for o in objs if o["kind"] == "DaemonSet")
        spec = ds["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "kernel-log")
        self.assertEqual(volume["hostPath"], {"path": "/var/log", "type": "DirectoryOrCreate"})
        shipper = next(c for c in spec["containers"] if c["name"] == "shipper")
        self.assertIn("--iptables-log=/host/kernel-log/syslog", shipper["args"])
        self.assertIn({"name": "kernel-log", "mountPath": "/host/kernel-log", "readOnly": True}, shipper["volumeMounts"])
        self.assertEqual(spec["securityContext"]["supplementalGroups"], [4])

    def test_grafana_dashboards_ship_as_sidecar_configmaps_equal_to_the_files(self):
        dashboards = sorted((CHART / "dashboards").glob("*.json"))
        self.assertGreaterEqual(len(dashboards), 2)
        # deploy/grafana/dashboards is the same folder.
        self.assertEqual(sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))[0].resolve(), dashboards[0].resolve())
        self.assertFalse([o for o in render() if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"].get("labels", {})])
        objs = render(["monitoring.grafanaDashboards.enabled=true", "monitoring.grafanaDashboards.namespace=monitoring"])
        maps = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1"]
        self.assertEqual(len(maps), len(dashboards))
        shipped = {}
        for m in maps:
            self.assertEqual(m["metadata"]["namespace"], "monitoring")
            self.assertEqual(m["metadata"]["annotations"]["grafana_folder"], "Verdict")
            self.assertLessEqual(len(m["metadata"]["name"]), 63)
            (key, text), = m["data"].items()
            shipped[key] = json.loads(text)
        for path in dashboards:
            self.assertEqual(shipped[path.name], json.loads(path.read_text()), path.name)

    def test_the_service_monitor_scrapes_the_collector_once(self):
        objs = render(VARIANTS["monitoring"])
        monitor = next(o for o in objs if o["kind"] == "ServiceMonitor")
        selector = monitor["spec"]["selector"]
        services = [o for o in objs if o["kind"] == "Service"]

        def selects(service):
            labels = service["metadata"]["labels"]
            return all(labels.get(k) == v for k, v in selector["matchLabels"].items()) and all(
                e["key"] not in labels for e in selector.get("matchExpressions", []) if e["operator"] == "DoesNotExist")

        self.assertEqual([s["metadata"]["name"] for s in services if selects(s)], ["verdict-collector"])

    def test_generated_tls_serves_the_collector_name_the_agents_dial(self):
        objs = render()
        secret = next(o for o in objs if o["metadata"]["name"] == "verdict-collector-tls")
        import base64

        pem = base64.b64decode(secret["data"]["tls.crt"])
        out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem, capture_output=True, check=True).stdout.decode()
        self.assertIn("DNS:verdict-collector.verdict.svc", out)
        ca = base64.b64decode(secret["data"]["ca.crt"])
        with tempfile.TemporaryDirectory() as d:
            (pathlib.Path(d) / "ca.pem").write_bytes(ca)
            (pathlib.Path(d) / "crt.pem").write_bytes(pem)
            subprocess.run(["openssl", "verify", "-CAfile", f"{d}/ca.pem", f"{d}/crt.pem"], check=True, capture_output=True)
        ds = next(o for o in objs if o["kind"] == "DaemonSet")
        shipper = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "shipper")
        self.assertIn("--collector=https://verdict-collector.verdict.svc:9000", shipper["args"])

    def test_cert_manager_issues_the_collector_certificate(self):
        objs = render(["tls.source=cert-manager"])
        cert = next(o for o in objs if o["kind"] == "Certificate" and o["metadata"]["name"] == "verdict-collector")
        self.assertEqual(cert["spec"]["secretName"], "verdict-collector-tls")
        self.assertIn("verdict-collector.verdict.svc", cert["spec"]["dnsNames"])
        self.assertFalse([o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == "verdict-collector-tls"])

    def test_uninstall_mode_cleans_every_node_and_runs_nothing_else(self):
        ds = next(o for o in render(["agent.uninstall=true"]) if o["kind"] == "DaemonSet")
        cs = ds["spec"]["template"]["spec"]["containers"]
        self.assertEqual([c["name"] for c in cs], ["uninstall"])
        self.assertEqual(cs[0]["args"][:2], ["--uninstall", "--stay"])
        # Ready only once clean: /healthz is served after the cleanup (kernel.rs tests that).
        port = cs[0]["readinessProbe"]["httpGet"]["port"]
        self.assertIn(f"--metrics-addr=127.0.0.1:{port}", cs[0]["args"])


class Documentation(unittest.TestCase):
    # Maps documented as one value (their keys are Kubernetes' or the user's own).
    FREE_FORM = {"updateStrategy", "probeResources", "shipperResources", "resources", "nodeSelector", "affinity",
                 "podAnnotations", "storageOptions", "annotations", "labels", "httpFromNamespaces"}

    def leaves(self, values, prefix=""):
        for k, v in values.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict) and v and k not in self.FREE_FORM:
                yield from self.leaves(v, path + ".")
            else:
                yield path, v

    def test_every_value_is_documented_with_its_default(self):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        rows = {}
        for line in (CHART / "README.md").read_text().split("\n## Values\n")[1].splitlines():
            m = re.match(r"\| `([A-Za-z0-9_.]+)` \| (.*?) \|", line)
            if m:
                rows[m.group(1)] = m.group(2)
        leaves = dict(self.leaves(values))
        self.assertEqual(set(rows), set(leaves), "the README's values table vs values.yaml")
        for path, default in leaves.items():
            if isinstance(default, bool):
                shown = "true" if default else "false"
            elif isinstance(default, str) and not default:
                shown = '""'
            elif isinstance(default, (int, str)):
                shown = str(default)
            elif default == []:
                shown = "[]"
            elif default == {}:
                shown = "{}"
            else:
                continue  # lists and maps: described in words
            self.assertIn(f"`{shown}`", rows[path], f"{path}: default {default!r}")


class SecurityPolicy(unittest.TestCase):
    def test_containers_are_locked_down(self):
        for variant, sets in VARIANTS.items():
            for o, spec, c in containers(render(sets)):
                name = f"{variant}: {o['metadata']['name']}/{c['name']}"
                sc = c["securityContext"]
                self.assertIs(sc.get("privileged"), False, name)
                self.assertIs(sc.get("allowPrivilegeEscalation"), False, name)
                self.assertIs(sc.get("readOnlyRootFilesystem"), True, name)
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"], name)
                added = set(sc["capabilities"].get("add", []))
                self.assertLessEqual(added, ALLOWED_CAPABILITIES[c["name"]], name)
                if c["name"] == "shipper":
                    self.assertEqual(added == {"SYSLOG"}, variant == "iptables from kmsg", name)
                for kind in ("requests", "limits"):
                    self.assertEqual(set(c["resources"][kind]), {"cpu", "memory"}, f"{name} {kind}")
                self.assertEqual(
                    (sc.get("seccompProfile") or spec["securityContext"]["seccompProfile"])["type"], "RuntimeDefault", name
                )

    def test_only_the_agent_touches_the_host(self):
        for variant, sets in VARIANTS.items():
            for o in render(sets):
                spec = o.get("spec", {}).get("template", {}).get("spec")
                if not spec:
                    continue
                host_paths = {v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
                if o["kind"] == "DaemonSet":
                    self.assertLessEqual(host_paths, AGENT_HOST_PATHS, variant)
                    self.assertFalse(spec.get("hostPID") or spec.get("hostIPC"), variant)
                else:
                    self.assertEqual(host_paths, set(), f"{variant}: {o['metadata']['name']}")
                    self.assertFalse(spec.get("hostNetwork"), variant)
                    self.assertIs(spec["securityContext"]["runAsNonRoot"], True, variant)

    def test_the_collector_is_only_reachable_on_its_two_ports(self):
        np = next(o for o in render(["collector.networkPolicy.ingestFrom={10.128.0.0/20}"]) if o["kind"] == "NetworkPolicy")
        self.assertEqual(np["spec"]["policyTypes"], ["Ingress"])
        ports = [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]
        self.assertEqual(sorted(ports), ["http", "ingest"])
        ingest = next(r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == "ingest")
        self.assertEqual(ingest["from"], [{"ipBlock": {"cidr": "10.128.0.0/20"}}])

    def test_secrets_never_appear_in_plain_config(self):
        objs = render(["collector.storageUrl=s3://flows/verdict", "collector.storageCredentialsSecret=verdict-s3"])
        cm = next(o for o in objs if o["kind"] == "ConfigMap")
        self.assertNotIn("token", cm["data"]["collector.toml"].lower().replace("token_", ""))
        sts = next(o for o in objs if o["kind"] == "StatefulSet")
        env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        self.assertEqual(next(e for e in env if e["name"] == "QUERY_TOKEN")["valueFrom"]["secretKeyRef"]["key"], "token")
        self.assertEqual(sts["spec"]["template"]["spec"]["containers"][0]["envFrom"], [{"secretRef": {"name": "verdict-s3"}}])

    def test_the_values_schema_refuses_what_would_break_an_install(self):
        for bad, why in [
            ("agent.mode=block", "agent/mode"),
            ("agent.bogus=1", "bogus"),
            ("tls.source=none", "tls/source"),
            ("collector.storageUrl=ftp://x/y", "storageUrl"),
            ("identity.tokenExpirationSeconds=60", "tokenExpirationSeconds"),
            ("agent.shipperStopDelaySeconds=0", "shipperStopDelaySeconds"),
            # A device needs a privileged container (the device cgroup): refused, saying so.
            ("agent.iptables.enabled=true,agent.iptables.logPath=/dev/kmsg", "cannot be read by an unprivileged container"),
        ]:
            with self.assertRaises(Exception) as e:
                render([bad])
            self.assertIn(why, str(e.exception), bad)


class Wiring(unittest.TestCase):
    def flags(self, name):
        out = subprocess.run([binary(name), "--help"], capture_output=True, text=True, check=True).stdout
        return {w.split("=")[0].rstrip(",") for w in out.split() if w.startswith("--")}

    def test_every_flag_the_chart_passes_exists(self):
        known = {
            "/usr/bin/verdict-probe": self.flags("verdict-probe"),
            "/usr/bin/verdict-shipper": self.flags("verdict-shipper"),
            "/usr/bin/verdict-collector": self.flags("verdict-collector"),
        }
        for variant, sets in VARIANTS.items():
            for o, _, c in containers(render(sets)):
                command = (c.get("command") or ["/usr/bin/verdict-probe"])[0]
                for a in c.get("args", []):
                    if a.startswith("--"):
                        self.assertIn(a.split("=")[0], known[command], f"{variant}: {c['name']} {a}")

    def test_the_rendered_collector_configuration_loads_in_the_collector(self):
        for variant in ["defaults", "object storage"]:
            cm = next(o for o in render(VARIANTS[variant]) if o["kind"] == "ConfigMap")
            text = cm["data"]["collector.toml"]
            tomllib.loads(text)
            with tempfile.TemporaryDirectory() as d:
                path = pathlib.Path(d) / "collector.toml"
                path.write_text(text)
                # The pod's mounted files are not here: the same environment overrides the pod
                # could use point the certificate paths at files that exist.
                for f in ("tls.crt", "tls.key"):
                    (pathlib.Path(d) / f).write_text("x")
                env = dict(
                    os.environ,
                    VERDICT_COLLECTOR__QUERY__AUTH_TOKENS='["t"]',
                    VERDICT_COLLECTOR__GRPC__TLS__CERT_FILE=f"{d}/tls.crt",
                    VERDICT_COLLECTOR__GRPC__TLS__KEY_FILE=f"{d}/tls.key",
                )
                r = subprocess.run([binary("verdict-collector"), "--config", path, "--print-config"], capture_output=True, text=True, env=env)
                self.assertEqual(r.returncode, 0, f"{variant}: {r.stderr}")
                self.assertIn('audience: "verdict-collector"', r.stdout)
                self.assertIn('"verdict:verdict-agent"', r.stdout)
                if variant == "object storage":
                    self.assertIn('"s3://flows/verdict"', r.stdout)

    def test_every_metric_the_alert_rules_use_is_exported(self):
        rule = next(o for o in render(VARIANTS["monitoring"]) if o["kind"] == "PrometheusRule")
        exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
        sources = "\n".join(p.read_text() for d in ("ebpf-probe/src", "node-shipper/src", "collector/src") for p in (ROOT / d).rglob("*.rs"))
        names = {n for e in exprs for n in metric_names(e)}
        self.assertTrue(names, exprs)
        for n in names:
            # prometheus_client appends _total to counters.
            self.assertIn(f'"{n.removesuffix("_total")}"', sources, f"{n}: no such metric is registered")

    def test_agent_metrics_stay_on_loopback_unless_scraped(self):
        def probe_metrics(sets):
            probe = next(c for _, _, c in containers(render(sets)) if c["name"] == "probe")
            return next(a for a in probe["args"] if a.startswith("--metrics-addr="))
        self.assertTrue(probe_metrics([]).startswith("--metrics-addr=127.0.0.1:"))
        self.assertTrue(probe_metrics(VARIANTS["monitoring"]).startswith("--metrics-addr=0.0.0.0:"))

    def test_the_kustomize_base_is_the_rendered_chart(self):
        base = ROOT / "deploy/kustomize/base/verdict.yaml"
        rendered = render_chart.render(files=[ROOT / "deploy/kustomize/base-values.yaml"], include_crds=True)
        if os.environ.get("UPDATE_KUSTOMIZE"):
            base.write_text(rendered)
        self.assertEqual(base.read_text(), rendered, "deploy/kustomize/base/verdict.yaml is stale: UPDATE_KUSTOMIZE=1 python3 -m unittest discover -s deploy/tests")
        built = [d for d in yaml.safe_load_all(subprocess.run(["kubectl", "kustomize", str(base.parent)], capture_output=True, text=True, check=True).stdout) if d]
        self.assertEqual(len(built), len([d for d in yaml.safe_load_all(rendered) if d]) + 1)
        self.assertFalse([o for o in built if o["kind"] == "Secret"], "a static base must not carry secrets")
        for o in built:
            if o["kind"] not in ("NetworkLogging", "CustomResourceDefinition"):
                kubernetes_validate.validate(o, KUBERNETES_VERSIONS[-1], strict=True)


if __name__ == "__main__":
    unittest.main()
