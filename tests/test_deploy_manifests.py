"""The ``deploy/`` manifests: Kubernetes schema validation and what the node agent and the
control plane (``deploy/control-plane/``) rely on.

Every object is validated (strict: unknown fields are errors) against the official Kubernetes
OpenAPI schemas, as packaged by ``kubernetes-validate``, for each version in
``KUBERNETES_VERSIONS``. A version the installed package has no schemas for is skipped with the
package release to upgrade to; a version it has is checked against exactly that version's
schemas, never a fallback to an older one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from gpucaas.cli import app as gpucaas_app
from gpucaas.node.health import UNHEALTHY_ANNOTATION
from gpucaas.runtime import runtime_class as runtime_class_from_code

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NAMESPACE = "gpucaas-system"
KUBERNETES_VERSIONS = ("1.34", "1.35", "1.36", "1.37")
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "RuntimeClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
KUSTOMIZATION = "kustomization.yaml"
IMAGE = "ghcr.io/gpucaas/gpucaas:0.1.0"
HGX_LABEL = {"gpucaas.io/hgx": "true"}

CONTROL_PLANE = DEPLOY / "control-plane"
CONTROL_PLANE_NAMESPACE = "gpucaas-control"
CONTROL_PLANE_PORT = 8080
STORE_ENV = "GPUCAAS_STORE_URL"

# Exactly what the control plane's ClusterRole grants: (apiGroup, resource) -> verbs.
CONTROL_PLANE_GRANTS = {
    ("", "namespaces"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "nodes"): {"get", "list", "watch"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "pods/binding"): {"create"},
    ("", "pods/log"): {"get"},
    ("", "resourcequotas"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "serviceaccounts"): {"get", "list", "watch", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}
FORBIDDEN_RESOURCES = {
    "*",
    "secrets",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "pods/proxy",
    "nodes/proxy",
    "serviceaccounts/token",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
}

DEVICE_PLUGIN_COMMAND = [
    "gpucaas",
    "node",
    "device-plugin",
    "--kubelet-dir",
    "/var/lib/kubelet",
    "--fabric",
    "/run/gpucaas/fm-controller.sock",
    "--resource",
    "nvidia.com/gpu",
]

# hostPath -> (mounted read-only in the device-plugin container?)
DEVICE_PLUGIN_HOST_PATHS = {
    "/var/lib/kubelet/device-plugins": False,
    "/var/lib/kubelet/pod-resources": True,
    "/var/run/cdi": False,
    "/dev/vfio": True,
    "/sys": True,
    "/var/lib/gpucaas": True,
    "/run/gpucaas": True,
}


Doc = dict[str, Any]


def _manifest_files(folder: Path = DEPLOY) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if p.name != KUSTOMIZATION)


def _load(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path.name} holds no YAML document"
    return docs


def _objects(folder: Path = DEPLOY) -> Iterator[tuple[str, Doc]]:
    for path in _manifest_files(folder):
        for doc in _load(path):
            yield str(path.relative_to(DEPLOY)), doc


OBJECTS = list(_objects())
CONTROL_PLANE_OBJECTS = list(_objects(CONTROL_PLANE))


def _object_id(item: tuple[str, Doc]) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _one(kind: str) -> Doc:
    found = [doc for _, doc in OBJECTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_spec() -> Doc:
    spec: Doc = _one("DaemonSet")["spec"]["template"]["spec"]
    return spec


def _container(name: str, *, init: bool = False) -> Doc:
    key = "initContainers" if init else "containers"
    found: list[Doc] = [c for c in _pod_spec()[key] if c["name"] == name]
    assert len(found) == 1, f"no {key[:-1]} named {name!r}"
    return found[0]


def _mounts_by_host_path(container: Doc) -> dict[str, Doc]:
    """The container's volume mounts of hostPath volumes, keyed by host path."""
    host_paths = {
        v["name"]: v["hostPath"]["path"] for v in _pod_spec()["volumes"] if "hostPath" in v
    }
    return {host_paths[m["name"]]: m for m in container["volumeMounts"] if m["name"] in host_paths}


def _expanded(container: Doc) -> list[str]:
    """``command + args`` as the kubelet runs them: ``$(VAR)`` expanded from the ConfigMap."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        configmap = _one("ConfigMap")
        assert configmap["metadata"]["name"] == ref, f"envFrom names unknown ConfigMap {ref}"
        env.update(configmap["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]

    def expand(arg: str) -> str:
        def one(match: re.Match[str]) -> str:
            assert match.group(1) in env, f"$({match.group(1)}) is not defined"
            return env[match.group(1)]

        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, arg)

    return [expand(a) for a in container.get("command", []) + container.get("args", [])]


# --- schema validation ---------------------------------------------------------------------


def _validator_or_skip(version: str) -> Any:
    """``kubernetes_validate.validate``, or a skip naming the release that has ``version``."""
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions, major_minor

    shipped = {major_minor(v) for v in all_versions()}
    if version not in shipped:
        installed = metadata.version("kubernetes-validate")
        pytest.skip(
            f"kubernetes-validate {installed} has no schemas for Kubernetes {version} "
            f"(it has {', '.join(sorted(shipped, key=lambda v: tuple(map(int, v.split('.')))))}); "
            f"upgrade to kubernetes-validate>={version}.0"
        )
    return kubernetes_validate.validate


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("item", OBJECTS + CONTROL_PLANE_OBJECTS, ids=_object_id)
def test_manifest_is_valid_for_kubernetes(version: str, item: tuple[str, Doc]) -> None:
    validate = _validator_or_skip(version)
    _, doc = item
    checked = validate(doc, version, strict=True)
    assert checked == version, f"validated against Kubernetes {checked}, not {version}"


def test_invalid_manifest_is_rejected() -> None:
    """The validator really checks: a misspelt field fails under strict validation."""
    validate = _validator_or_skip(KUBERNETES_VERSIONS[-1])
    import kubernetes_validate

    daemonset = yaml.safe_load(yaml.safe_dump(_one("DaemonSet")))
    daemonset["spec"]["template"]["spec"]["hostPid"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)


# --- layout --------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _load(DEPLOY / KUSTOMIZATION)[0]
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert sorted(resources) == [p.name for p in _manifest_files()]
    assert all(not p.name.endswith(".yml") for p in DEPLOY.iterdir()), "use .yaml"
    images = {i["name"]: i["newTag"] for i in kustomization["images"]}
    name, tag = IMAGE.rsplit(":", 1)
    assert images == {name: tag}


def test_readme_describes_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in [*_manifest_files(), DEPLOY / KUSTOMIZATION]:
        assert f"`{path.name}`" in readme, f"README.md does not mention {path.name}"


@pytest.mark.parametrize("item", OBJECTS, ids=_object_id)
def test_namespaced_objects_are_in_gpucaas_system(item: tuple[str, Doc]) -> None:
    _, doc = item
    if doc["kind"] in CLUSTER_SCOPED:
        assert "namespace" not in doc["metadata"], f"{doc['kind']} is cluster-scoped"
    else:
        assert doc["metadata"].get("namespace") == NAMESPACE


def test_namespace_allows_the_privileged_init_container() -> None:
    namespace = _one("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


# --- RBAC ----------------------------------------------------------------------------------


def test_rbac_reads_nodes_and_pods_and_patches_only_nodes() -> None:
    role = _one("ClusterRole")
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("", "nodes"): {"get", "list", "watch", "patch"},
        ("", "pods"): {"get", "list", "watch"},
    }
    binding = _one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = _one("ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert _pod_spec()["serviceAccountName"] == account["metadata"]["name"]


# --- ConfigMap and DaemonSet ---------------------------------------------------------------


def test_configmap_holds_the_node_agent_settings() -> None:
    data = _one("ConfigMap")["data"]
    assert data["GPUCAAS_RESOURCE_NAME"] == "nvidia.com/gpu"
    assert data["GPUCAAS_BOARD"] == "hgx-h100-8"
    assert data["GPUCAAS_FABRIC"] == "/run/gpucaas/fm-controller.sock"
    assert data["GPUCAAS_CDI_DIR"] == "/var/run/cdi"
    assert data["GPUCAAS_MODULE_MAP"] == "/var/lib/gpucaas/module-map.json"
    assert data["GPUCAAS_KUBELET_DIR"] == "/var/lib/kubelet"
    assert all(isinstance(v, str) for v in data.values())


def test_device_plugin_command_line() -> None:
    argv = _expanded(_container("device-plugin"))
    assert argv[: len(DEVICE_PLUGIN_COMMAND)] == DEVICE_PLUGIN_COMMAND
    port = _container("device-plugin")["ports"][0]["containerPort"]
    assert argv[len(DEVICE_PLUGIN_COMMAND) :] == ["--http-listen", f"0.0.0.0:{port}"]


def test_init_container_binds_gpus_but_not_nvswitches() -> None:
    init = _container("vfio-bind", init=True)
    argv = _expanded(init)
    assert argv == ["gpucaas", "node", "vfio", "bind"]
    assert init["securityContext"]["privileged"] is True
    sys_mount = _mounts_by_host_path(init)["/sys"]
    assert sys_mount["mountPath"] == "/sys"
    assert sys_mount.get("readOnly", False) is False


def test_device_plugin_host_paths_and_read_only_mounts() -> None:
    mounts = _mounts_by_host_path(_container("device-plugin"))
    assert set(mounts) == set(DEVICE_PLUGIN_HOST_PATHS)
    for host_path, read_only in DEVICE_PLUGIN_HOST_PATHS.items():
        mount = mounts[host_path]
        # Paths given on the command line are used as-is inside the container.
        assert mount["mountPath"] == host_path
        assert mount.get("readOnly", False) is read_only, host_path
    assert mounts["/sys"]["recursiveReadOnly"] == "IfPossible"


def test_device_plugin_security_context() -> None:
    pod = _pod_spec()
    assert pod["hostPID"] is False
    assert pod.get("hostNetwork", False) is False
    assert pod.get("hostIPC", False) is False
    context = _container("device-plugin")["securityContext"]
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in context["capabilities"]


def test_daemonset_scheduling_and_rollout() -> None:
    daemonset = _one("DaemonSet")
    assert daemonset["metadata"]["name"] == "gpucaas-node-agent"
    pod = _pod_spec()
    assert HGX_LABEL.items() <= pod["nodeSelector"].items()
    assert pod["priorityClassName"] == "system-node-critical"
    tolerated = {t["key"] for t in pod["tolerations"] if t["operator"] == "Exists"}
    assert {"nvidia.com/gpu", "gpucaas.io/hgx"} <= tolerated
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_containers_have_resources_probes_and_the_placeholder_image() -> None:
    pod = _pod_spec()
    for container in pod["initContainers"] + pod["containers"]:
        assert container["image"] == IMAGE
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    plugin = _container("device-plugin")
    port_names = {p["name"] for p in plugin["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert plugin[probe]["httpGet"]["port"] in port_names


# --- RuntimeClass --------------------------------------------------------------------------


def test_runtime_class_for_kata_gpu_vms() -> None:
    runtime_class = _one("RuntimeClass")
    assert runtime_class["metadata"]["name"] == "kata-qemu-nvidia-gpu"
    assert runtime_class["handler"] == "kata-qemu-nvidia-gpu"
    # Written from gpucaas.runtime.runtime_class() (tests/runtime/ checks the whole object):
    # sized for the largest default VM, far above the Kata default of 10Gi.
    assert runtime_class["overhead"] == runtime_class_from_code()["overhead"]
    assert int(runtime_class["overhead"]["podFixed"]["memory"].removesuffix("Gi")) > 20
    assert runtime_class["scheduling"]["nodeSelector"] == HGX_LABEL


# --- the manifests against the real CLI --------------------------------------------------------


def _cli_command(argv: list[str]) -> tuple[Any, list[str], list[str]]:
    """The command object that ``argv`` (``gpucaas ...``) runs (typer's, click-compatible),
    its path, and its arguments."""
    assert argv[0] == "gpucaas", argv
    command: Any = typer.main.get_command(gpucaas_app)
    path, rest = ["gpucaas"], argv[1:]
    while hasattr(command, "commands") and rest:
        sub = command.commands.get(rest[0])
        assert sub is not None, f"`{' '.join(path)}` has no command {rest[0]!r}"
        command, path, rest = sub, [*path, rest[0]], rest[1:]
    return command, path, rest


@pytest.mark.parametrize(
    ("container", "init", "command"),
    [
        ("device-plugin", False, ["gpucaas", "node", "device-plugin"]),
        ("vfio-bind", True, ["gpucaas", "node", "vfio", "bind"]),
    ],
)
def test_manifest_flags_are_accepted_by_the_cli(
    container: str, init: bool, command: list[str]
) -> None:
    """Every flag a container passes exists on the real command, and the whole command line
    parses (types converted, nothing unknown), so the manifests cannot drift from the CLI."""
    argv = _expanded(_container(container, init=init))
    cli, path, args = _cli_command(argv)
    assert path == command
    known = {opt for param in cli.params for opt in (*param.opts, *param.secondary_opts)}
    flags = [a.split("=", 1)[0] for a in args if a.startswith("-")]
    if container == "device-plugin":
        assert "--http-listen" in flags
    for flag in flags:
        assert flag in known, f"`{' '.join(path)}` has no option {flag} (it has {sorted(known)})"
    context = cli.make_context(" ".join(path), list(args))  # raises on anything it refuses
    assert not context.args


def test_manifest_flag_check_catches_drift() -> None:
    cli, path, args = _cli_command(["gpucaas", "node", "device-plugin", "--no-such-flag", "x"])
    with pytest.raises(Exception, match="No such option"):
        cli.make_context(" ".join(path), args)


# --- the control plane (deploy/control-plane/) -----------------------------------------------


def _cp_one(kind: str) -> Doc:
    found = [doc for _, doc in CONTROL_PLANE_OBJECTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in control-plane/, found {len(found)}"
    return found[0]


def _cp_pod_spec() -> Doc:
    spec: Doc = _cp_one("Deployment")["spec"]["template"]["spec"]
    return spec


def _cp_container() -> Doc:
    containers: list[Doc] = _cp_pod_spec()["containers"]
    assert len(containers) == 1, "the control plane pod runs one container"
    return containers[0]


def test_control_plane_kustomization_lists_every_manifest() -> None:
    kustomization = _load(CONTROL_PLANE / KUSTOMIZATION)[0]
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert sorted(resources) == [p.name for p in _manifest_files(CONTROL_PLANE)]
    assert all(not p.name.endswith(".yml") for p in CONTROL_PLANE.iterdir()), "use .yaml"
    assert "namespace" not in kustomization, "objects name their namespace themselves"
    images = {i["name"]: i["newTag"] for i in kustomization["images"]}
    name, tag = IMAGE.rsplit(":", 1)
    assert images == {name: tag}


def test_readme_describes_every_control_plane_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in [*_manifest_files(CONTROL_PLANE), CONTROL_PLANE / KUSTOMIZATION]:
        assert f"`control-plane/{path.name}`" in readme, f"README.md does not mention {path}"


@pytest.mark.parametrize("item", CONTROL_PLANE_OBJECTS, ids=_object_id)
def test_control_plane_objects_are_in_their_namespace(item: tuple[str, Doc]) -> None:
    _, doc = item
    if doc["kind"] in CLUSTER_SCOPED:
        assert "namespace" not in doc["metadata"], f"{doc['kind']} is cluster-scoped"
    else:
        assert doc["metadata"].get("namespace") == CONTROL_PLANE_NAMESPACE


def test_control_plane_namespace_enforces_restricted() -> None:
    """Not the node agent's privileged namespace: the restricted Pod Security level refuses a
    control plane pod whose security context is weakened."""
    namespace = _cp_one("Namespace")
    assert namespace["metadata"]["name"] == CONTROL_PLANE_NAMESPACE != NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_control_plane_deployment_command_store_and_replicas() -> None:
    deployment = _cp_one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = _cp_container()
    argv = container["command"] + container["args"]
    assert argv == [
        "gpucaas",
        "up",
        "--backend",
        "kubernetes",
        "--listen",
        f"0.0.0.0:{CONTROL_PLANE_PORT}",
        "--state-dir",
        "/tmp/gpucaas",
    ]
    # The store URL holds a password: from the Secret, through the environment, never argv.
    env = {var["name"]: var for var in container["env"]}
    assert env[STORE_ENV]["valueFrom"]["secretKeyRef"] == {"name": "gpucaas-store", "key": "url"}
    assert not any("$(" in arg or "postgresql" in arg for arg in argv)
    assert "envFrom" not in container
    assert container["image"] == IMAGE
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()


def test_control_plane_probes_use_healthz_on_8080() -> None:
    container = _cp_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports.get(get["port"], get["port"]) == CONTROL_PLANE_PORT


def test_control_plane_security_context() -> None:
    pod = _cp_pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for host in ("hostPID", "hostIPC", "hostNetwork"):
        assert pod.get(host, False) is False
    assert not any("hostPath" in volume for volume in pod.get("volumes", []))
    context = _cp_container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context.get("privileged", False) is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in context or context["runAsUser"] != 0


def _grants(role: Doc) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def _least_privilege_problems(role: Doc) -> list[str]:
    """What is wrong with the control plane's ClusterRole: anything beyond the exact grants,
    and, named explicitly, any wildcard, escalation verb or forbidden resource."""
    granted = _grants(role)
    problems = []
    for (group, resource), verbs in granted.items():
        if group == "*" or resource in FORBIDDEN_RESOURCES:
            problems.append(f"forbidden resource {group or 'core'}/{resource}")
        if verbs & FORBIDDEN_VERBS:
            problems.append(f"forbidden verbs {sorted(verbs & FORBIDDEN_VERBS)} on {resource}")
    if granted != CONTROL_PLANE_GRANTS:
        problems.append(f"grants differ from the reviewed set: {granted}")
    return problems


def test_control_plane_rbac_is_exactly_least_privilege() -> None:
    role = _cp_one("ClusterRole")
    assert _least_privilege_problems(role) == []
    assert "aggregationRule" not in role
    binding = _cp_one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = _cp_one("ServiceAccount")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": CONTROL_PLANE_NAMESPACE,
        }
    ]
    assert _cp_pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    # The node agent's role is another object, untouched by the control plane's.
    assert role["metadata"]["name"] != _one("ClusterRole")["metadata"]["name"]


@pytest.mark.parametrize(
    "extra",
    [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]},
    ],
    ids=["verb *", "secrets", "pods/exec", "escalate", "impersonate", "wildcard", "node patch"],
)
def test_rbac_check_catches_a_broadened_role(extra: Doc) -> None:
    role = yaml.safe_load(yaml.safe_dump(_cp_one("ClusterRole")))
    role["rules"].append(extra)
    assert _least_privilege_problems(role)


def test_control_plane_service_selects_the_deployment() -> None:
    service = _cp_one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    pod_labels = _cp_one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"] == _cp_one("Deployment")["spec"]["selector"]["matchLabels"]
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    container_ports = {p["name"]: p["containerPort"] for p in _cp_container()["ports"]}
    assert container_ports.get(port["targetPort"], port["targetPort"]) == CONTROL_PLANE_PORT
    budget = _cp_one("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] < _cp_one("Deployment")["spec"]["replicas"]


def test_control_plane_command_is_accepted_by_the_cli() -> None:
    """The Deployment's command line parses on the real ``gpucaas up``, and the two values it
    passes by environment (store URL, first admin token) are options that read them."""
    container = _cp_one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    argv = [*container["command"], *container["args"]]
    cli, path, args = _cli_command(argv)
    assert path == ["gpucaas", "up"]
    context = cli.make_context(" ".join(path), list(args))
    assert not context.args
    assert context.params["backend"] == "kubernetes"
    envvars = {param.envvar for param in cli.params if getattr(param, "envvar", None)}
    passed = {e["name"] for e in container["env"]}
    assert {"GPUCAAS_STORE_URL", "GPUCAAS_ADMIN_TOKEN"} <= envvars & passed


def test_the_admission_policy_confines_the_agents_node_patches() -> None:
    """RBAC's node `patch` is narrowed by the ValidatingAdmissionPolicy to the agent's own
    Node and its unhealthy-GPU annotation (enforced on a real apiserver in
    tests/e2e/test_real_node.py)."""
    policy = _one("ValidatingAdmissionPolicy")
    binding = _one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}
    ]
    account = _one("ServiceAccount")["metadata"]
    [condition] = spec["matchConditions"]
    assert (
        f"system:serviceaccount:{account['namespace']}:{account['name']}" in condition["expression"]
    )
    text = " ".join(v["expression"] for v in spec["validations"])
    assert "authentication.kubernetes.io/node-name" in text
    assert UNHEALTHY_ANNOTATION in " ".join(v["expression"] for v in spec["variables"])
