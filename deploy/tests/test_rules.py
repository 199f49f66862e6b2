"""The deny-spike alert rules: deploy/helm/verdict/rules/deny-spikes.yaml, a plain Prometheus rule
file that the chart's PrometheusRule carries.

- `promtool check rules` accepts the file and `promtool test rules` passes its unit tests
  (rules/deny-spikes.test.yaml), which make every alert fire where it should, with its labels and
  annotations, and stay silent where it must not.
- The chart rendered with monitoring.prometheusRule.enabled=true holds exactly the file's groups
  after its own health group, and none of them with monitoring.prometheusRule.denySpikes=false.
- Every alert has a severity and a summary, a description and a `verdict` command in `query`
  whose flags the CLI has.

promtool comes from Debian's `prometheus` package (scripts/test.sh installs it). Without it the
promtool tests are skipped, saying so, except under CI=true, where they fail.

Run: python3 -m unittest discover -s deploy/tests -p test_rules.py -v
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import unittest

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_chart import ROOT, binary, render  # noqa: E402

RULES_DIR = ROOT / "deploy/helm/verdict/rules"
RULES = RULES_DIR / "deny-spikes.yaml"
RULE_TESTS = RULES_DIR / "deny-spikes.test.yaml"
# Each alert and its scope label (one alert per value; None: one for the collector).
ALERTS = {
    "VerdictDenyFlood": "dest_namespace",
    "VerdictDenyRatio": "dest_namespace",
    "VerdictDenySpike": "dest_namespace",
    "VerdictNodeSilent": "node",
    "VerdictFlowLogLoss": "reason",
    "VerdictFlowMetricsFolded": None,
}


def promtool():
    """promtool's path; skips the test without it, or fails under CI=true."""
    path = shutil.which("promtool")
    if path:
        return path
    why = "promtool is missing (Debian's prometheus package: apt-get install prometheus; scripts/test.sh installs it)"
    if os.environ.get("CI") in ("true", "1"):
        raise AssertionError(f"{why}; it is required when CI=true")
    print(f"SKIPPED: {why}", file=sys.stderr)
    raise unittest.SkipTest(why)


def run_promtool(*args):
    r = subprocess.run([promtool(), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def rules_file():
    return yaml.safe_load(RULES.read_text())


def rules(groups):
    return [r for g in groups for r in g["rules"]]


def prometheus_rule(sets):
    return next(o for o in render(["monitoring.prometheusRule.enabled=true", *sets]) if o["kind"] == "PrometheusRule")


class Promtool(unittest.TestCase):
    def test_promtool_accepts_the_rule_file(self):
        code, out = run_promtool("check", "rules", RULES.name)
        self.assertEqual(code, 0, out)
        self.assertIn(f"SUCCESS: {len(rules(rules_file()['groups']))} rules found", out)

    def test_the_rules_unit_tests_pass(self):
        code, out = run_promtool("test", "rules", RULE_TESTS.name)
        self.assertEqual(code, 0, out)
        self.assertIn("SUCCESS", out)


class RuleFile(unittest.TestCase):
    def test_every_alert_is_tested_firing_and_silent(self):
        alerts = {r["alert"] for r in rules(rules_file()["groups"]) if "alert" in r}
        self.assertEqual(alerts, set(ALERTS))
        cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
        for name in ALERTS:
            with self.subTest(alert=name):
                mine = [c for c in cases if c["alertname"] == name]
                firing = [a for c in mine for a in c.get("exp_alerts") or []]
                self.assertTrue(firing, "no case where it fires")
                self.assertTrue([c for c in mine if not c.get("exp_alerts")], "no case where it must stay silent")
                for a in firing:
                    self.assertEqual(set(a["exp_annotations"]), {"summary", "description", "query"})
                    self.assertIn(a["exp_labels"]["severity"], {"critical", "warning", "info"})
                # One alert per scope: the expression keeps the scope label (promtool compares
                # the labels exactly).
                if ALERTS[name]:
                    self.assertTrue([a for a in firing if ALERTS[name] in a["exp_labels"]], f"no firing case with {ALERTS[name]}")

    def test_alerts_carry_severity_scope_and_annotations(self):
        for r in rules(rules_file()["groups"]):
            if "alert" not in r:
                continue
            with self.subTest(alert=r["alert"]):
                self.assertIn(r["labels"]["severity"], {"critical", "warning", "info"})
                self.assertEqual(set(r["annotations"]), {"summary", "description", "query"})
                self.assertTrue(r["annotations"]["query"].startswith("verdict "), r["annotations"]["query"])
                if ALERTS[r["alert"]]:
                    self.assertIn(f"$labels.{ALERTS[r['alert']]}", r["annotations"]["summary"])

    def test_every_recorded_series_the_rules_read_is_recorded(self):
        groups = rules_file()["groups"]
        recorded = {r["record"] for r in rules(groups) if "record" in r}
        for r in rules(groups):
            for name in re.findall(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", r["expr"]):
                self.assertIn(name, recorded, r.get("alert") or r.get("record"))

    def test_the_query_annotations_use_only_flags_the_cli_has(self):
        def flags(*command):
            out = subprocess.run([binary("verdict"), *command, "--help"], capture_output=True, text=True, check=True).stdout
            return {w.split("=")[0].rstrip(",") for w in out.split() if w.startswith("--")}

        known = {"logs read": flags("logs", "read"), "sql": flags("sql")}
        for r in rules(rules_file()["groups"]):
            if "alert" not in r:
                continue
            query = r["annotations"]["query"]
            command = next(c for c in known if query.startswith(f"verdict {c} "))
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", query):
                self.assertIn(flag, known[command], f"{r['alert']}: {query}")


class Chart(unittest.TestCase):
    def test_the_prometheus_rule_holds_exactly_the_rule_files_groups(self):
        groups = prometheus_rule([])["spec"]["groups"]
        self.assertEqual(groups[0]["name"], "verdict.health")
        self.assertEqual(groups[1:], rules_file()["groups"])

    def test_deny_spikes_off_leaves_the_health_alerts_only(self):
        groups = prometheus_rule(["monitoring.prometheusRule.denySpikes=false"])["spec"]["groups"]
        self.assertEqual([g["name"] for g in groups], ["verdict.health"])
        self.assertFalse({r.get("alert") for r in rules(groups)} & set(ALERTS))

    def test_no_prometheus_rule_without_the_operator_switch(self):
        self.assertFalse([o for o in render(["monitoring.prometheusRule.denySpikes=true"]) if o["kind"] == "PrometheusRule"])

    def test_the_values_schema_refuses_a_non_boolean_switch(self):
        with self.assertRaises(Exception) as e:
            render(["monitoring.prometheusRule.denySpikes=sometimes"])
        self.assertIn("denySpikes", str(e.exception))


if __name__ == "__main__":
    unittest.main()
