"""Static checks of the scale-out variants (a Redis Cluster for crmsync's state, the broker on RabbitMQ):
deploy/docker-compose.scale-out.yml and the deploy/k8s-scale-out overlay.

The manifests validate against the Kubernetes schemas offline, and the overlay is built with kustomize (when
kubectl is installed) and its output validated as well. Every crmsync container reaches the cluster with a
redis+cluster:// URL as its own ACL user and the broker with an amqp:// URL to the crmsync vhost (the metrics
endpoint, which queues nothing, gets no broker password); no password is written in any file; every Redis node
loads redis.conf, cluster.conf and the ACL users through node-start.sh. What these files do on real servers is
tested in test_scale_out_live.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY
from tests.deploy.test_static import _secret_refs, _volumes_of

KUBECTL = shutil.which("kubectl")
COMPOSE = DEPLOY / "docker-compose.scale-out.yml"
BASE_COMPOSE = DEPLOY / "docker-compose.yml"
OVERLAY = DEPLOY / "k8s-scale-out"
NODES = [f"redis-{i}" for i in range(1, 7)]
# Service -> its Redis ACL user; the ones that queue jobs also get the broker.
REDIS_USERS = {"worker": "worker", "scheduler": "scheduler", "metrics": "metrics", "admin": "admin"}
QUEUEING = {"worker", "scheduler", "admin"}
BROKER_URL = "amqp://crmsync:${CRMSYNC_RABBITMQ_PASSWORD:?set it in deploy/.env}@rabbitmq:5672/crmsync"
NOT_CORE = {("kustomize.config.k8s.io/v1beta1", "Kustomization"), ("monitoring.coreos.com/v1", "ServiceMonitor")}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def overlay_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc)
            for path in sorted(OVERLAY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


# -- Kubernetes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("where", "doc"), overlay_documents(), ids=[w for w, _ in overlay_documents()])
def test_overlay_manifest_validates(where: str, doc: dict[str, Any]) -> None:
    if (doc["apiVersion"], doc["kind"]) in NOT_CORE:
        pytest.skip("kustomize's own file: built by test_the_overlay_builds_and_validates")
    validate(doc)


def built_overlay() -> list[dict[str, Any]]:
    assert KUBECTL is not None
    built = subprocess.run([KUBECTL, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120,
                           check=False)
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: kustomize build not checked")


@needs_kubectl
def test_the_overlay_builds_and_validates() -> None:
    docs = built_overlay()
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) not in NOT_CORE:
            validate(doc)
        assert doc["metadata"].get("namespace") in {"crmsync", None}, doc["metadata"]["name"]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    # The base's single Redis is gone; the cluster, its creation Job and RabbitMQ are in.
    assert ("StatefulSet", "crmsync-redis") not in names
    assert ("Service", "redis") not in names
    assert {("StatefulSet", "crmsync-redis-cluster"), ("Job", "crmsync-redis-cluster-create"),
            ("Service", "crmsync-redis-cluster"), ("StatefulSet", "crmsync-rabbitmq"),
            ("Service", "rabbitmq"), ("PodDisruptionBudget", "crmsync-redis-cluster")} <= names
    # Every ConfigMap a pod mounts is one the build made (kustomize followed the hashed names).
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps, (doc["metadata"]["name"], volume)


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs
            if d["kind"] in {"Deployment", "StatefulSet", "Job"}}


@needs_kubectl
def test_overlay_crmsync_pods_get_their_redis_user_and_the_broker_from_secrets() -> None:
    pods = _pods(built_overlay())
    wanted = {"crmsync-worker": "worker", "crmsync-scheduler": "scheduler", "crmsync-metrics": "metrics",
              "crmsync-admin": "admin"}
    for name, user in wanted.items():
        refs = set().union(*(_secret_refs(c) for c in pods[name]["containers"]))
        broker = {("crmsync-broker", "url")} if user in QUEUEING else set()
        assert refs == {("crmsync-redis", f"{user}-url")} | broker, name
    # The cluster's pods: only the break-glass hash by reference, passwords as files; the Job: clusteradmin only.
    for name in ("crmsync-redis-cluster", "crmsync-redis-cluster-create", "crmsync-rabbitmq"):
        refs = set().union(*(_secret_refs(c) for c in pods[name]["containers"]))
        assert refs <= {("crmsync-redis-users", "breakglass-password-sha256")}, name
    secret_mounts = {name: set().union(*(_volumes_of(c, spec) for c in spec["containers"]))
                     for name, spec in pods.items()}
    assert secret_mounts == {
        "crmsync-worker": {"crmsync-salesforce", "crmsync-smtp"},
        "crmsync-admin": {"crmsync-salesforce", "crmsync-smtp"},
        "crmsync-scheduler": set(), "crmsync-metrics": set(),
        "crmsync-redis-cluster": {"crmsync-redis-users"}, "crmsync-redis-cluster-create": {"crmsync-redis-users"},
        "crmsync-rabbitmq": {"crmsync-rabbitmq"}}
    job_items = {i["key"] for v in pods["crmsync-redis-cluster-create"]["volumes"] if "secret" in v
                 for i in v["secret"]["items"]}
    assert job_items == {"clusteradmin-password"}


@needs_kubectl
@pytest.mark.parametrize("name", ["crmsync-redis-cluster", "crmsync-redis-cluster-create", "crmsync-rabbitmq"])
def test_overlay_pods_run_unprivileged_with_resources(name: str) -> None:
    spec = _pods(built_overlay())[name]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"  # the namespace is `restricted`
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]


def test_cluster_pods_load_the_acl_and_announce_their_dns_names() -> None:
    docs = dict(overlay_documents())
    nodes = docs["redis-cluster.yaml:StatefulSet/crmsync-redis-cluster"]
    service = docs["redis-cluster.yaml:Service/crmsync-redis-cluster"]
    assert nodes["spec"]["replicas"] == 6
    assert nodes["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in service["spec"]["ports"]} == {6379, 16379}  # clients and the cluster bus
    (container,) = nodes["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "/usr/local/etc/crmsync/node-start.sh"]
    assert "maxmemory-policy" not in " ".join(container["args"])  # nothing overrides noeviction
    env = {e["name"]: e for e in container["env"]}
    assert env["CRMSYNC_REDIS_ANNOUNCE_HOSTNAME"]["value"] == "$(POD_NAME).crmsync-redis-cluster.crmsync.svc"
    for user in ("ADMIN", "WORKER", "SCHEDULER", "METRICS", "REPLICA", "CLUSTERADMIN"):
        assert env[f"CRMSYNC_REDIS_{user}_PASSWORD_FILE"]["value"].startswith("/run/secrets/redis-users/")
    assert not any(name.endswith("_PASSWORD") for name in env)  # files, never values
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/usr/local/etc/crmsync"] == "config"
    assert mounts["/data"] == "data"
    job = docs["redis-cluster.yaml:Job/crmsync-redis-cluster-create"]
    (create,) = job["spec"]["template"]["spec"]["containers"]
    assert create["command"][:2] == ["sh", "/usr/local/etc/crmsync/create-cluster.sh"]
    assert create["command"][2:] == [f"crmsync-redis-cluster-{i}.crmsync-redis-cluster.crmsync.svc:6379"
                                     for i in range(6)]


def test_scale_out_secret_examples() -> None:
    example = {d["metadata"]["name"]: d["stringData"]
               for d in yaml.safe_load_all((OVERLAY / "secrets.example.yaml").read_text())}
    assert set(example["crmsync-redis"]) == {f"{user}-url" for user in REDIS_USERS.values()}
    for key, url in example["crmsync-redis"].items():
        assert url.startswith(f"redis+cluster://{key.removesuffix('-url')}:REPLACE_ME@"), key
        assert not url.endswith("/0")  # a cluster has one database
    assert set(example["crmsync-redis-users"]) == {"admin-password", "worker-password", "scheduler-password",
                                                   "metrics-password", "replica-password", "clusteradmin-password",
                                                   "breakglass-password-sha256"}
    assert example["crmsync-broker"]["url"] == "amqp://crmsync:REPLACE_ME@rabbitmq.crmsync.svc:5672/crmsync"
    assert set(example["crmsync-rabbitmq"]) == {"password"}
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert "secrets.example.yaml" not in kustomization["resources"]
    assert set(kustomization["resources"]) == {"../k8s", "../rabbitmq", "redis-cluster.yaml", "rabbitmq.yaml"}


def test_rabbitmq_config_map_holds_the_compose_files() -> None:
    (generator,) = yaml.safe_load((DEPLOY / "rabbitmq" / "kustomization.yaml").read_text())["configMapGenerator"]
    assert set(generator["files"]) == {"rabbitmq.conf", "definitions.json", "render-definitions.sh"}
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    assert re.search(r"^load_definitions = /tmp/crmsync-definitions\.json$", conf, re.MULTILINE)
    pod = dict(overlay_documents())["rabbitmq.yaml:StatefulSet/crmsync-rabbitmq"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "/tmp/crmsync-definitions.json" in " ".join(container["args"])
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


# -- Compose ------------------------------------------------------------------------------------------------

def test_compose_scale_out_refers_only_to_existing_files() -> None:
    spec = compose()
    named_volumes = set(spec["volumes"])
    for name, service in spec["services"].items():
        for env_file in service.get("env_file", []):
            assert (DEPLOY / env_file).is_file(), f"{name}: env_file {env_file}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        for dependency in service.get("depends_on", []):
            assert dependency in spec["services"], f"{name} depends on unknown {dependency}"
        for argument in [*service.get("entrypoint", [])]:
            if argument.startswith("/usr/local/etc/crmsync/"):
                assert (DEPLOY / "redis" / argument.removeprefix("/usr/local/etc/crmsync/")).is_file(), argument


def test_compose_scale_out_variables_are_documented_and_no_password_is_written() -> None:
    text = COMPOSE.read_text()
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    variables = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert variables <= documented, f"not in deploy/.env.example: {sorted(variables - documented)}"
    assert {"CRMSYNC_REDIS_REPLICA_PASSWORD", "CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD",
            "CRMSYNC_RABBITMQ_PASSWORD"} <= variables
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|_URL$", key):
                assert "${" in str(value), f"{name}.{key} must come from .env"
    assert "guest" not in yaml.safe_dump(compose())  # comments aside: no service names the guest user


def test_every_crmsync_service_uses_the_cluster_and_rabbitmq() -> None:
    services = compose()["services"]
    for name, user in REDIS_USERS.items():
        environment = services[name]["environment"]
        url = environment["REDIS_URL"]
        assert url.startswith(f"redis+cluster://{user}:${{CRMSYNC_REDIS_{user.upper()}_PASSWORD:?"), name
        seeds = url.rpartition("}@")[2]
        assert seeds
        assert all(seed in {f"{node}:6379" for node in NODES} for seed in seeds.split(",")), seeds
        assert environment.get("BROKER_URL") == (BROKER_URL if name in QUEUEING else None), name
        dependencies = services[name]["depends_on"]
        assert dependencies["redis-cluster-create"] == {"condition": "service_completed_successfully"}, name
    for name, service in services.items():
        if name not in REDIS_USERS:
            assert "REDIS_URL" not in (service.get("environment") or {}), name
            assert "BROKER_URL" not in (service.get("environment") or {}), name


def test_compose_scale_out_shares_the_rest_with_the_base_stack() -> None:
    base, scale_out = yaml.safe_load(BASE_COMPOSE.read_text()), compose()
    assert base["name"] == scale_out["name"]  # the same project: volumes such as data and prometheus-data carry over
    assert base["x-crmsync"] == scale_out["x-crmsync"]
    for name in ("worker-metrics", "prometheus", "grafana"):
        assert scale_out["services"][name] == base["services"][name], name
    for name in REDIS_USERS:
        for key in set(base["services"][name]) - {"environment", "depends_on"}:
            assert scale_out["services"][name][key] == base["services"][name][key], (name, key)
    assert set(base["services"]) - {"redis"} <= set(scale_out["services"])
    # The shared prometheus.yml scrapes services this stack has too.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            assert target.split(":")[0] in set(scale_out["services"]) | {"localhost"}, target


def test_compose_redis_nodes_load_the_acl_and_the_cluster_config() -> None:
    services = compose()["services"]
    for node in NODES:
        service = services[node]
        assert service["entrypoint"] == ["sh", "/usr/local/etc/crmsync/node-start.sh"], node
        assert service["user"] == "redis"
        assert service["volumes"] == ["./redis:/usr/local/etc/crmsync:ro", f"{node}-data:/data"], node
        environment = service["environment"]
        assert environment["CRMSYNC_REDIS_ANNOUNCE_HOSTNAME"] == node
        assert {k for k in environment if "BREAKGLASS" in k} == {"CRMSYNC_REDIS_BREAKGLASS_PASSWORD_SHA256"}
        for user in ("ADMIN", "WORKER", "SCHEDULER", "METRICS", "REPLICA", "CLUSTERADMIN"):
            assert f"CRMSYNC_REDIS_{user}_PASSWORD" in environment, (node, user)
        assert set(service["expose"]) == {"6379", "16379"}
    create = services["redis-cluster-create"]
    assert create["entrypoint"][:2] == ["sh", "/usr/local/etc/crmsync/create-cluster.sh"]
    assert create["entrypoint"][2:] == [f"{node}:6379" for node in NODES]
    assert set(create["environment"]) == {"CRMSYNC_REDIS_CLUSTERADMIN_PASSWORD"}
    assert set(create["depends_on"]) == set(NODES)
    # Nothing else knows of break-glass; only the Redis nodes get the replica and clusteradmin passwords.
    for name, service in services.items():
        environment = service.get("environment") or {}
        if name not in NODES:
            assert not {k for k in environment if re.search("BREAKGLASS|REPLICA", k)}, name
            if name != "redis-cluster-create":
                assert not {k for k in environment if "CLUSTERADMIN" in k}, name
    conf = (DEPLOY / "redis" / "cluster.conf").read_text()
    assert re.search(r"^cluster-enabled yes$", conf, re.MULTILINE)
    assert "maxmemory-policy" not in conf  # redis.conf's noeviction holds on every node
    start = (DEPLOY / "redis" / "node-start.sh").read_text()
    assert 'redis-server "$conf_dir/redis.conf" --include "$conf_dir/cluster.conf"' in start


def test_compose_rabbitmq_renders_its_definitions_from_a_password() -> None:
    rabbitmq = compose()["services"]["rabbitmq"]
    assert set(rabbitmq["environment"]) == {"RABBITMQ_CONFIG_FILE", "CRMSYNC_RABBITMQ_PASSWORD"}
    assert rabbitmq["environment"]["RABBITMQ_CONFIG_FILE"] == "/usr/local/etc/crmsync-rabbitmq/rabbitmq.conf"
    assert "./rabbitmq:/usr/local/etc/crmsync-rabbitmq:ro" in rabbitmq["volumes"]
    command = " ".join(rabbitmq["entrypoint"])
    assert "render-definitions.sh /usr/local/etc/crmsync-rabbitmq/definitions.json" in command
    assert "/tmp/crmsync-definitions.json" in command
    assert "ports" not in rabbitmq  # reachable on the compose network only
