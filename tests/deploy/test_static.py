"""Static checks of deploy/: promtool on the rules and their unit tests, every YAML and JSON file parses, the
Kubernetes manifests validate against the Kubernetes schemas offline (and build with kustomize when kubectl is
installed), the compose file and the Dockerfile refer only to files and settings that exist in this repository,
every alert has a runbook entry, each service gets only its own Redis user and only the secrets it uses, and
every Redis runs with maxmemory-policy noeviction."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT
from tests.deploy.promql import ALERT_TESTS, ALERTS, DASHBOARDS, alert_rules

PROMTOOL = shutil.which("promtool")
KUBECTL = shutil.which("kubectl")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install -y prometheus; .ci/run does it)")
YAML_FILES = sorted(p for ext in ("*.yml", "*.yaml") for p in DEPLOY.rglob(ext))
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
COMPOSE = DEPLOY / "docker-compose.yml"
REDIS_CONF = DEPLOY / "redis" / "redis.conf"
DOCKERFILE = DEPLOY / "Dockerfile"
# Not in the Kubernetes schemas: custom resources and kustomize's own file, checked by hand below.
NOT_CORE = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("kustomize.config.k8s.io/v1beta1", "Kustomization")}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc)
            for path in K8S_FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


# -- Prometheus ---------------------------------------------------------------------------------------------

@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_checks_the_prometheus_config() -> None:
    result = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_tested_firing_and_quiet() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for rule in alert_rules():
        assert cases.get(rule["alert"]) == {True, False}, f"{rule['alert']} needs a firing and a quiet case"


def test_every_rule_tells_ops_what_to_do() -> None:
    runbook = (DEPLOY / "README.md").read_text()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert rule["annotations"]["runbook"] == f"deploy/README.md#{rule['alert'].lower()}"
        assert f"\n### {rule['alert']}\n" in runbook, f"deploy/README.md has no runbook entry for {rule['alert']}"


def test_prometheus_scrapes_the_jobs_the_alerts_name() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    named = set(re.findall(r'job="([^"]+)"', " ".join(str(r["expr"]) for r in alert_rules())))
    assert named
    assert named <= jobs
    assert config["rule_files"] == ["alerts.yml"]
    services = set(yaml.safe_load(COMPOSE.read_text())["services"])
    for job in config["scrape_configs"]:
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            host = target.split(":")[0]
            assert host in services | {"localhost"}, f"scrape target {target} is no compose service"


# -- every file parses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} is empty"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text())


def test_grafana_provisioning_matches_the_dashboards() -> None:
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {ds["uid"] for ds in datasources["datasources"]}
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/crmsync.yml").read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert "tenant" in variables
        assert dashboard["uid"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, panel["title"]
                assert panel["targets"], panel["title"]


# -- Kubernetes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("where", "doc"), k8s_documents(), ids=[w for w, _ in k8s_documents()])
def test_k8s_manifest_validates(where: str, doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    if (doc["apiVersion"], doc["kind"]) in NOT_CORE:
        pytest.skip("not a core Kubernetes type: checked by test_custom_resources")
    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_k8s_validator_catches_mistakes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = next(doc for _, doc in k8s_documents() if doc["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.utils.latest_version(), strict=True)


def test_custom_resources() -> None:
    docs = dict(k8s_documents())
    monitor = next(d for d in docs.values() if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "crmsync"
    scraped = set(monitor["spec"]["selector"]["matchExpressions"][0]["values"])
    services = [d for d in docs.values() if d["kind"] == "Service" and "crmsync.io/scrape" in d["metadata"]["labels"]]
    assert {s["metadata"]["labels"]["crmsync.io/scrape"] for s in services} == scraped
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in {p["name"] for s in services for p in s["spec"]["ports"]}
        assert endpoint["relabelings"][0]["targetLabel"] == "job"
    # The ServiceMonitor's job names are the ones the alerts use.
    assert {f"crmsync-{value}" for value in scraped} == {"crmsync-metrics", "crmsync-worker"}
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = [r for r in kustomization["resources"] if not r.startswith("../")]
    for resource in files:
        assert (DEPLOY / "k8s" / resource).is_file(), resource
    assert set(files) == {p.name for p in K8S_FILES} - {"kustomization.yaml", "secrets.example.yaml"}
    # The one directory outside: deploy/redis, whose kustomization makes the Redis ConfigMap from its files.
    assert set(kustomization["resources"]) - set(files) == {"../redis"}


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(where, doc["spec"]["template"]["spec"]) for where, doc in k8s_documents()
            if doc["kind"] in {"Deployment", "StatefulSet"}]


@pytest.mark.parametrize(("where", "spec"), pod_specs(), ids=[w for w, _ in pod_specs()])
def test_pods_run_unprivileged_with_resources(where: str, spec: dict[str, Any]) -> None:
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
        env = {e["name"]: e for e in container.get("env", [])}
        if "REDIS_URL" in env:  # a password: always from a Secret
            assert "secretKeyRef" in env["REDIS_URL"]["valueFrom"]


def _configuration_table() -> str:
    guide = (ROOT / "docs" / "operating.md").read_text()
    start = guide.index("## Configuration")
    return guide[start:guide.index("\n## ", start)]


def test_every_setting_is_documented() -> None:
    # worker/settings.py is where every variable is read: its table and the operating guide's must agree.
    module = (ROOT / "worker" / "settings.py").read_text()
    in_module = set(re.findall(r"``((?:CRMSYNC|REDIS|PROMETHEUS)_[A-Z_]+)``", module))
    in_guide = set(re.findall(r"`((?:CRMSYNC|REDIS|PROMETHEUS)_[A-Z_]+)`", _configuration_table()))
    assert in_module == in_guide


def test_configmap_holds_the_documented_settings() -> None:
    documented = set(re.findall(r"`(CRMSYNC_[A-Z_]+)`", _configuration_table())) - {"CRMSYNC_ACTOR"}  # per person
    configmap = next(d for _, d in k8s_documents() if d["kind"] == "ConfigMap")
    assert documented <= set(configmap["data"])
    compose_env = dict(line.split("=", 1) for line in (DEPLOY / "crmsync.env").read_text().splitlines()
                       if line and not line.startswith("#"))
    assert documented <= set(compose_env)
    # No secret in it: CRMSYNC_SECRET_DIRS only says where secret files may be read from.
    secret_like = {k for k in configmap["data"] if re.search("PASSWORD|SECRET|TOKEN|REDIS_URL", k)}
    assert secret_like <= {"CRMSYNC_SECRET_DIRS"}


def test_worker_pods_share_the_metrics_directory() -> None:
    worker = next(doc for _, doc in k8s_documents()
                  if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "crmsync-worker")
    containers = {c["name"]: c for c in worker["spec"]["template"]["spec"]["containers"]}
    directory = next(e["value"] for e in containers["worker"]["env"] if e["name"] == "PROMETHEUS_MULTIPROC_DIR")
    assert directory
    for container in containers.values():
        assert directory in {m["mountPath"] for m in container["volumeMounts"]}
    assert directory in containers["metrics"]["args"]
    assert "--no-tenants" in containers["metrics"]["args"]


# -- Compose ------------------------------------------------------------------------------------------------

def test_compose_refers_only_to_existing_files() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    named_volumes = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name
        for env_file in service.get("env_file", []):
            assert (DEPLOY / env_file).is_file(), f"{name}: env_file {env_file}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        for dependency in service.get("depends_on", []):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"


def test_compose_variables_are_documented_and_secrets_stay_out() -> None:
    text = COMPOSE.read_text()
    variables = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    assert variables
    assert variables <= documented, f"not in deploy/.env.example: {sorted(variables - documented)}"
    for line in example.splitlines():
        if re.match(r"^[A-Z_]*PASSWORD=", line):
            assert line.endswith("="), f".env.example must not carry a password: {line}"
    compose = yaml.safe_load(text)
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|REDIS_URL", key):
                assert "${" in str(value), f"{name}.{key} must come from .env"
    urls = {name: s["environment"]["REDIS_URL"] for name, s in compose["services"].items()
            if "REDIS_URL" in (s.get("environment") or {})}
    assert urls["worker"].startswith("redis://worker:")
    assert urls["scheduler"].startswith("redis://scheduler:")
    assert urls["metrics"].startswith("redis://metrics:")
    assert urls["admin"].startswith("redis://admin:")
    assert compose["services"]["scheduler"]["deploy"]["replicas"] == 2
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text()
    assert "*" in ignored.splitlines()


def test_compose_redis_uses_aof_and_the_acl_template() -> None:
    conf = (DEPLOY / "redis" / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.MULTILINE)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.MULTILINE)
    redis_service = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]
    command = " ".join(redis_service["entrypoint"])
    assert "render-acl.sh /usr/local/etc/crmsync/users.acl" in command
    assert "--aclfile" in command
    assert "./redis:/usr/local/etc/crmsync:ro" in redis_service["volumes"]


# -- Dockerfile ---------------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def test_dockerfile_copies_only_what_exists() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for instruction, args in dockerfile_instructions():
        if instruction in {"COPY", "ADD"} and "--from=" not in args:
            *sources, _destination = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path in the build context"
                assert f"!{source.rstrip('/')}{'/' if (ROOT / source).is_dir() else ''}" in ignore, \
                    f"{source} is excluded by Dockerfile.dockerignore"


def test_dockerfile_runs_unprivileged_without_secrets() -> None:
    instructions = dockerfile_instructions()
    stages = [args for instruction, args in instructions if instruction == "FROM"]
    assert all(re.match(r"python:3\.1[12]-slim\b", stage) for stage in stages)
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", '["crmsync"]') in instructions
    env = " ".join(args for instruction, args in instructions if instruction in {"ENV", "ARG"})
    assert "PROMETHEUS_MULTIPROC_DIR=/run/crmsync/metrics" in env
    assert not re.search(r"PASSWORD|SECRET|TOKEN|REDIS_URL", env)
    run = " ".join(args for instruction, args in instructions if instruction == "RUN")
    # Every dependency at the hash of the lock file, then the project itself without resolving anything again.
    assert "pip install --require-hashes -r requirements.lock" in run
    assert "pip install --no-deps ." in run
    assert "chown -R crmsync:crmsync /var/lib/crmsync /run/crmsync" in run


# -- each service: its own Redis user, only the secrets it uses ---------------------------------------------

# Who may mount what: Salesforce credentials and the SMTP password where tokens are requested and notifications
# delivered (the worker), and where connect / `notify email set` check the files (the admin tool); nowhere else.
SECRET_MOUNTS = {"worker": {"salesforce", "smtp"}, "admin": {"salesforce", "smtp"}}
REDIS_USERS = {"worker": "worker", "scheduler": "scheduler", "metrics": "metrics", "admin": "admin"}


def test_compose_mounts_secrets_only_where_used() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert "volumes" not in compose["x-crmsync"], "the shared service template must not mount anything"
    mounting = {name for name, service in compose["services"].items()
                if any(str(v).split(":")[0] == "./secrets" for v in service.get("volumes", []))}
    assert mounting == set(SECRET_MOUNTS)
    for name in ("scheduler", "metrics", "worker-metrics"):
        assert not any("secrets" in str(v) for v in compose["services"][name].get("volumes", [])), name


def test_compose_gives_each_service_its_own_redis_user_and_breakglass_to_none() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        url = environment.get("REDIS_URL")
        if name in REDIS_USERS:
            assert url.startswith(f"redis://{REDIS_USERS[name]}:${{CRMSYNC_REDIS_{REDIS_USERS[name].upper()}_"), name
        else:
            assert url is None, name
        breakglass = {k for k in environment if "BREAKGLASS" in k}
        # Only Redis knows of it, and only its hash.
        assert breakglass == ({"CRMSYNC_REDIS_BREAKGLASS_PASSWORD_SHA256"} if name == "redis" else set()), name
    assert "breakglass" not in COMPOSE.read_text().replace("CRMSYNC_REDIS_BREAKGLASS_PASSWORD_SHA256", "").lower()


def _volumes_of(container: dict[str, Any], spec: dict[str, Any]) -> set[str]:
    """The Secrets a container mounts, by name."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    return {secrets[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in secrets}


def _secret_refs(container: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_k8s_mounts_secrets_only_where_used() -> None:
    wanted = {("crmsync-worker", "worker"): {"crmsync-salesforce", "crmsync-smtp"},
              ("crmsync-admin", "admin"): {"crmsync-salesforce", "crmsync-smtp"},
              ("crmsync-redis", "redis"): {"crmsync-redis-users"}}
    seen = {}
    for _, doc in k8s_documents():
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            seen[(doc["metadata"]["name"], container["name"])] = _volumes_of(container, spec)
    assert {k: v for k, v in seen.items() if v} == wanted
    assert seen[("crmsync-worker", "metrics")] == set()  # the sidecar serves counters, it needs no secret
    assert seen[("crmsync-scheduler", "scheduler")] == set()
    assert seen[("crmsync-metrics", "metrics")] == set()


def test_k8s_gives_each_pod_its_own_redis_user_and_breakglass_to_none() -> None:
    wanted = {"crmsync-worker": "worker-url", "crmsync-scheduler": "scheduler-url",
              "crmsync-metrics": "metrics-url", "crmsync-admin": "admin-url"}
    for where, doc in k8s_documents():
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        name = doc["metadata"]["name"]
        refs = set().union(*(_secret_refs(c) for c in doc["spec"]["template"]["spec"]["containers"]))
        if name in wanted:
            assert refs == {("crmsync-redis", wanted[name])}, where
        else:
            assert refs == {("crmsync-redis-users", "breakglass-password-sha256")}, where  # Redis: a hash
    example = list(yaml.safe_load_all((DEPLOY / "k8s" / "secrets.example.yaml").read_text()))
    urls = next(d for d in example if d["metadata"]["name"] == "crmsync-redis")["stringData"]
    assert set(urls) == set(wanted.values())
    assert all(url.startswith(f"redis://{key.removesuffix('-url')}:") for key, url in urls.items())
    users = next(d for d in example if d["metadata"]["name"] == "crmsync-redis-users")["stringData"]
    assert set(users) == {"admin-password", "worker-password", "scheduler-password", "metrics-password",
                          "breakglass-password-sha256"}


# -- every Redis: noeviction, AOF, the ACL users -------------------------------------------------------------

def test_k8s_redis_runs_the_repository_redis_conf() -> None:
    assert re.search(r"^maxmemory-policy noeviction$", REDIS_CONF.read_text(), re.MULTILINE)
    generator = yaml.safe_load((DEPLOY / "redis" / "kustomization.yaml").read_text())["configMapGenerator"]
    (config,) = generator
    # The single Redis uses the first three; the Redis Cluster of deploy/k8s-scale-out the same ConfigMap.
    assert set(config["files"]) == {"redis.conf", "users.acl", "render-acl.sh", "cluster.conf", "cluster-users.acl",
                                    "node-start.sh", "create-cluster.sh"}
    for name in config["files"]:
        assert (DEPLOY / "redis" / name).is_file(), name
    redis_set = next(doc for _, doc in k8s_documents() if doc["kind"] == "StatefulSet")
    spec = redis_set["spec"]["template"]["spec"]
    mounts = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    (container,) = spec["containers"]
    mounted = {m["mountPath"] for m in container["volumeMounts"] if mounts.get(m["name"]) == config["name"]}
    command = " ".join(container["command"] + container["args"])
    assert mounted == {"/usr/local/etc/crmsync"}
    assert "redis-server /usr/local/etc/crmsync/redis.conf --aclfile" in command
    assert "render-acl.sh /usr/local/etc/crmsync/users.acl" in command
    assert "maxmemory-policy" not in command  # nothing overrides the file's noeviction
    service = next(doc for _, doc in k8s_documents() if doc["kind"] == "Service" and doc["metadata"]["name"] == "redis")
    assert service["spec"]["selector"] == redis_set["spec"]["selector"]["matchLabels"]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: kustomize build not checked")
def test_kustomize_builds_a_noeviction_redis() -> None:
    assert KUBECTL is not None
    built = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True,
                           timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("crmsync-redis-"))
    assert config["data"]["redis.conf"] == REDIS_CONF.read_text()
    assert config["data"]["users.acl"] == (DEPLOY / "redis" / "users.acl").read_text()
    assert config["metadata"]["namespace"] == "crmsync"
    redis_set = next(d for d in docs if d["kind"] == "StatefulSet")
    volumes = {v["name"]: v for v in redis_set["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]  # the hashed name, followed
