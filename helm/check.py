#!/usr/bin/env python3
"""Checks the Helm chart offline (no helm binary, no cluster):

- `helm lint --strict` through the Helm SDK (PyPI helm-python-sdk) for two Kubernetes versions;
- renders the default values and helm/openraft-memory/ci-values.yaml;
- validates every rendered object with kubernetes-validate --strict for two versions;
- asserts the facts the cluster lifecycle depends on;
- fails when deploy/kubernetes/openraft-memory.yaml (the rendered defaults, for people
  without Helm) or the chart's copies of the alert rules and dashboard drift.

    python3 helm/check.py            # check
    python3 helm/check.py --update   # rewrite the committed copies
"""

import json
import pathlib
import subprocess
import sys
import tempfile

try:
    import helm_python as helm
    import yaml
except ImportError as e:
    sys.exit(
        f"helm/check.py needs Python packages that are not installed ({e.name}): "
        "python3 -m pip install helm-python-sdk kubernetes-validate pyyaml"
    )

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "openraft-memory"
RENDERED = ROOT / "deploy" / "kubernetes" / "openraft-memory.yaml"
COPIES = {
    CHART / "files" / "alerts.yml": ROOT / "deploy" / "prometheus" / "alerts.yml",
    CHART / "files" / "openraft-memory.json": ROOT / "deploy" / "grafana" / "dashboards" / "openraft-memory.json",
}
KUBE_VERSIONS = ["1.30.0", "1.33.0"]
RELEASE, NAMESPACE = "openraft-memory", "default"


def fail(msg):
    print(f"helm check FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def render(values):
    manifests = helm.Chart.load(str(CHART)).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt") or not manifests[path].strip():
            continue
        docs.append(f"# Source: {path}\n{manifests[path].strip()}\n")
    return "---\n".join(docs), manifests


def objects(text):
    return [d for d in yaml.safe_load_all(text) if d]


def find(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if not found:
        fail(f"no {kind} {name or ''} rendered")
    return found[0]


def check_persistence(objs, enabled):
    sts = find(objs, "StatefulSet")
    config = find(objs, "ConfigMap", sts["metadata"]["name"])["data"]["config.toml"]
    claims = sts["spec"].get("volumeClaimTemplates", [])
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    if not enabled:
        if claims or "data" in mounts or 'mode = "memory"' not in config:
            fail("without persistence: no volume claims, no data mount, storage mode memory")
        return
    if [c["metadata"]["name"] for c in claims] != ["data"] or "data" not in mounts:
        fail(f"persistence needs a `data` volumeClaimTemplate mounted in the container: {claims}, {mounts}")
    for needle in ['mode = "disk"', f'data_dir = "{mounts["data"]}"']:
        if needle not in config:
            fail(f"persistence: config.toml lacks `{needle}`:\n{config}")


def check_facts(objs, replicas):
    sts = find(objs, "StatefulSet")
    spec = sts["spec"]
    if spec["podManagementPolicy"] != "Parallel":
        fail("StatefulSet must use podManagementPolicy: Parallel")
    if spec["replicas"] != replicas:
        fail(f"replicas {spec['replicas']} != {replicas}")
    headless = find(objs, "Service", spec["serviceName"])
    if headless["spec"].get("clusterIP") != "None" or headless["spec"].get("publishNotReadyAddresses") is not True:
        fail("the StatefulSet's service must be headless and publish not-ready addresses")
    if not any(p["name"] == "raft" for p in headless["spec"]["ports"]):
        fail("the headless Service needs a port named raft (for _raft._tcp SRV records)")
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports != {"http": 8080, "grpc": 50051, "raft": 50052}:
        fail(f"container ports: {ports}")
    for probe, path in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")]:
        get = c[probe]["httpGet"]
        if get["path"] != path or get["port"] != "http":
            fail(f"{probe} must GET {path} on the http port, got {get}")
    env = {e["name"]: e for e in c["env"]}
    if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail("POD_NAME must come from the downward API")
    if "POD_NAMESPACE" not in env:
        fail("POD_NAMESPACE must come from the downward API")
    if c["args"] != ["serve", "--config", "/etc/openraft-memory/config.toml"]:
        fail(f"args: {c['args']}")
    if c["lifecycle"]["preStop"]["sleep"]["seconds"] < 1:
        fail("preStop must wait for endpoints to drain")
    sc = c["securityContext"]
    if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
        fail(f"container securityContext: {sc}")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        fail("capabilities must be dropped")
    if pod["securityContext"].get("runAsNonRoot") is not True:
        fail("pods must run as non-root")
    if pod["terminationGracePeriodSeconds"] < 25:
        fail("termination grace period too short for the shutdown deadline")
    config = find(objs, "ConfigMap", sts["metadata"]["name"])["data"]["config.toml"]
    dns = f'dns_name = "{spec["serviceName"]}.{NAMESPACE}.svc.cluster.local"'
    for needle in ['mode = "dns"', dns, 'addr = "0.0.0.0:8080"', 'addr = "0.0.0.0:50052"']:
        if needle not in config:
            fail(f"config.toml lacks `{needle}`:\n{config}")
    pdb = find(objs, "PodDisruptionBudget")
    if pdb["spec"]["maxUnavailable"] != 1:
        fail("PodDisruptionBudget must allow one disruption at a time")


def check_restore(objs):
    """restore.enabled mounts the backup read-only and points every pod at it (only ordinal 0
    reads it); extra volumes reach the pod."""
    pod = find(objs, "StatefulSet")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    want = "/var/lib/openraft-memory-restore/backup.snapshot"
    if env.get("OPENRAFT_MEMORY__STORAGE__RESTORE_FROM") != want:
        fail(f"restore: OPENRAFT_MEMORY__STORAGE__RESTORE_FROM must be {want}, env: {env}")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    if mounts.get("restore", {}).get("readOnly") is not True or "scratch" not in mounts:
        fail(f"restore: the backup must be mounted read-only, extra mounts kept: {mounts}")
    volumes = {v["name"]: v for v in pod["volumes"]}
    if volumes.get("restore", {}).get("secret", {}).get("secretName") != "db-backup" or "scratch" not in volumes:
        fail(f"restore: the volume must come from the Secret, extra volumes kept: {volumes}")
    try:
        render({"restore": {"enabled": True}})
    except Exception as e:  # the chart's `fail`: no source given
        if "exactly one of" not in str(e):
            fail(f"restore without a source fails with the wrong message: {e}")
    else:
        fail("restore.enabled without a Secret or claim must fail to render")


def check_backup():
    """backup.* renders the [backup] settings and the credentials Secret as environment;
    restore.fromLatest points every pod at `latest` and needs backup.enabled."""
    import tomllib

    values = {
        "backup": {"enabled": True, "target": "s3://db-backups/prod", "interval": "5m", "keep": 3,
                   "existingSecret": "s3-credentials"},
        "restore": {"fromLatest": True},
    }
    objs = objects(render(values)[0])
    config = tomllib.loads(find(objs, "ConfigMap", RELEASE)["data"]["config.toml"])
    if config.get("backup") != {"target": "s3://db-backups/prod", "interval": "5m", "keep": 3}:
        fail(f"backup: config.toml [backup] is {config.get('backup')}")
    c = find(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    if env.get("OPENRAFT_MEMORY__STORAGE__RESTORE_FROM") != "latest":
        fail(f"restore.fromLatest: OPENRAFT_MEMORY__STORAGE__RESTORE_FROM must be latest, env: {env}")
    if c.get("envFrom") != [{"secretRef": {"name": "s3-credentials"}}]:
        fail(f"backup.existingSecret must reach the container as envFrom: {c.get('envFrom')}")
    default = tomllib.loads(find(objects(render(None)[0]), "ConfigMap", RELEASE)["data"]["config.toml"])
    if "backup" in default:
        fail("backups are off by default, yet config.toml has [backup]")
    for bad, message in [
        ({"restore": {"fromLatest": True}}, "set backup.enabled"),
        ({"backup": {"enabled": True}}, "needs backup.target"),
        ({"backup": {"enabled": True, "target": "s3://b/p"},
          "restore": {"fromLatest": True, "enabled": True, "secretName": "x"}}, "exclude each other"),
    ]:
        try:
            render(bad)
        except Exception as e:  # the chart's `fail` / `required`
            if message not in str(e):
                fail(f"{bad} fails with the wrong message: {e}")
        else:
            fail(f"{bad} must fail to render")


def check_plaintext(objs, manifests):
    """Without peer TLS the config says insecure (or the node refuses 0.0.0.0) and NOTES warn."""
    sts = find(objs, "StatefulSet")
    config = find(objs, "ConfigMap", sts["metadata"]["name"])["data"]["config.toml"]
    if "insecure = true" not in config:
        fail(f"without tls.peer.enabled the config must set tls.peer.insecure:\n{config}")
    if "WARNING: tls.peer.enabled is false" not in manifests.get("openraft-memory/templates/NOTES.txt", ""):
        fail("NOTES.txt must warn when the peer port is plaintext")
    probe = sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    if probe.get("scheme") != "HTTP":
        fail(f"plaintext REST needs HTTP probes: {probe}")


def check_security(objs):
    """TLS from cert-manager on both ports and tokens: mounts, config paths, probes, names."""
    sts = find(objs, "StatefulSet")
    name = sts["metadata"]["name"]
    config = find(objs, "ConfigMap", name)["data"]["config.toml"]
    for needle in ['cert = "/etc/openraft-memory/tls/peer/tls.crt"', 'ca = "/etc/openraft-memory/tls/peer/ca.crt"',
                   'cert = "/etc/openraft-memory/tls/client/tls.crt"', 'ca = "/etc/openraft-memory/tls/client/ca.crt"',
                   'tokens_file = "/etc/openraft-memory/auth/tokens"', "anonymous_metrics = false"]:
        if needle not in config:
            fail(f"security values: config.toml lacks `{needle}`:\n{config}")
    if "insecure = true" in config:
        fail("with peer TLS the config must not say insecure")
    pod = sts["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for vol, path in [("tls-peer", "/etc/openraft-memory/tls/peer"), ("tls-client", "/etc/openraft-memory/tls/client"),
                      ("auth", "/etc/openraft-memory/auth")]:
        if vol not in mounts or mounts[vol]["mountPath"] != path or not mounts[vol].get("readOnly"):
            fail(f"volume {vol} must be mounted read-only at {path}: {mounts.get(vol)}")
    if volumes["tls-peer"]["secret"]["secretName"] != f"{name}-tls" or volumes["auth"]["secret"]["secretName"] != "db-tokens":
        fail(f"TLS from cert-manager's Secret, tokens from auth.existingSecret: {volumes}")
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
        if pod["containers"][0][probe]["httpGet"].get("scheme") != "HTTPS":
            fail(f"{probe} must use HTTPS when client TLS is on")
    endpoint = find(objs, "ServiceMonitor")["spec"]["endpoints"][0]
    if endpoint.get("scheme") != "https" or endpoint["tlsConfig"]["ca"]["secret"]["name"] != f"{name}-tls" \
            or endpoint["tlsConfig"]["serverName"] != name or endpoint["authorization"]["type"] != "Bearer":
        fail(f"the ServiceMonitor must scrape over HTTPS with the CA and a metrics token: {endpoint}")
    cert = find(objs, "Certificate")
    headless = find(objs, "Service", f"{name}-headless")["metadata"]["name"] if any(
        o["kind"] == "Service" and o["metadata"]["name"] == f"{name}-headless" for o in objs) else None
    dns = cert["spec"]["dnsNames"]
    if not any(d.startswith("*.") and ".svc." in d for d in dns) or name not in dns:
        fail(f"the Certificate must name every pod (a wildcard under the headless Service) and the client Service: {dns} ({headless})")
    if cert["spec"]["issuerRef"]["name"] != "db-ca" or cert["spec"]["secretName"] != f"{name}-tls":
        fail(f"Certificate issuer and Secret: {cert['spec']}")


def validate(path):
    for version in KUBE_VERSIONS:
        out = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", "-k", version, str(path)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            fail(f"kubernetes-validate -k {version}:\n{out.stdout}{out.stderr}")


def main():
    update = "--update" in sys.argv
    for chart_copy, source in COPIES.items():
        if update:
            chart_copy.write_bytes(source.read_bytes())
        elif chart_copy.read_bytes() != source.read_bytes():
            fail(f"{chart_copy.relative_to(ROOT)} differs from {source.relative_to(ROOT)}: run helm/check.py --update")

    ci_values = yaml.safe_load((CHART / "ci-values.yaml").read_text())
    for version in KUBE_VERSIONS:
        for label, values in [("default", None), ("ci-values", ci_values)]:
            report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{version}")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            if problems:
                fail(f"helm lint --strict ({label}, {version}): {problems}")

    text, manifests_default = render(None)
    header = "# Rendered from helm/openraft-memory with default values (release openraft-memory,\n# namespace default). Regenerate: python3 helm/check.py --update\n"
    rendered_default = header + "---\n" + text
    if update:
        RENDERED.parent.mkdir(parents=True, exist_ok=True)
        RENDERED.write_text(rendered_default)
    elif not RENDERED.exists() or RENDERED.read_text() != rendered_default:
        fail(f"{RENDERED.relative_to(ROOT)} drifted from the chart: run python3 helm/check.py --update")
    default_objs = objects(text)
    check_facts(default_objs, 3)
    check_persistence(default_objs, False)
    kinds = sorted(o["kind"] for o in default_objs)
    if "ServiceMonitor" in kinds or "Certificate" in kinds:
        fail(f"optional objects rendered by default: {kinds}")
    find(default_objs, "NetworkPolicy")
    check_plaintext(default_objs, manifests_default)

    ci_text, manifests = render(ci_values)
    ci_objs = objects(ci_text)
    check_facts(ci_objs, 5)
    check_persistence(ci_objs, True)
    check_restore(ci_objs)
    check_backup()
    check_security(ci_objs)
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"]:
        find(ci_objs, kind)
    rule = find(ci_objs, "PrometheusRule")
    source = ROOT / "deploy" / "prometheus" / "alerts.yml"
    want = sum(len(g["rules"]) for g in yaml.safe_load(source.read_text())["groups"])
    got = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    if got != want:
        fail(f"PrometheusRule carries {got} alert rules, {source.relative_to(ROOT)} has {want}")
    dash = find(ci_objs, "ConfigMap", f"{RELEASE}-dashboard")
    json.loads(dash["data"]["openraft-memory.json"])
    np = find(ci_objs, "NetworkPolicy")
    peer_rule = np["spec"]["ingress"][0]
    if peer_rule["ports"] != [{"port": "raft", "protocol": "TCP"}] or "podSelector" not in peer_rule["from"][0]:
        fail("the NetworkPolicy must admit only cluster members to the peer port")
    if "kubectl" not in manifests.get("openraft-memory/templates/NOTES.txt", "") or "port-forward" not in manifests["openraft-memory/templates/NOTES.txt"]:
        fail("NOTES.txt must print the port-forward command")

    with tempfile.TemporaryDirectory() as tmp:
        for name, body in [("default.yaml", text), ("ci.yaml", ci_text)]:
            path = pathlib.Path(tmp) / name
            # CRDs (ServiceMonitor, PrometheusRule) have no bundled schema: validate the rest.
            core = [d for d in yaml.safe_load_all(body) if d and not d["apiVersion"].startswith(("monitoring.coreos.com", "cert-manager.io"))]
            path.write_text(yaml.safe_dump_all(core))
            validate(path)
    print(f"helm check passed: lint (strict, {', '.join(KUBE_VERSIONS)}), render (default, ci-values), "
          f"kubernetes-validate, facts, no drift")


if __name__ == "__main__":
    main()
