"""Unit tests of the node agent's pure rules: env, paths, status/phase, scheduling, routing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubetrain_nodeagent import podspec, routing, scheduling, status
from kubetrain_nodeagent.podspec import ConfigError, PathMap
from kubetrain_nodeagent.status import ContainerState, PodView, Terminated

Obj = dict[str, Any]


def pod(**spec: Any) -> Obj:
    base: Obj = {
        "metadata": {
            "name": "p1",
            "namespace": "ns1",
            "uid": "uid-1",
            "labels": {"app": "web"},
            "annotations": {"a": "b"},
        },
        "spec": {"containers": [{"name": "c", "command": ["python"]}], "serviceAccountName": "sa"},
        "status": {"phase": "Pending"},
    }
    base["spec"].update(spec)
    return base


# ---------------------------------------------------------------- podspec


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(A)-x", "1-x"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("tail$", "tail$"),
        ("$(A)$(B)", "12"),
    ],
)
def test_expand_follows_kubernetes_rules(value: str, expected: str) -> None:
    assert podspec.expand(value, {"A": "1", "B": "2"}) == expected


def resolve(p: Obj, container: Obj, **kw: Any) -> dict[str, str]:
    args: dict[str, Any] = {
        "configmaps": {},
        "secrets": {},
        "pod_ip": "127.0.0.7",
        "host_ip": "127.0.0.1",
        "node_name": "n1",
        "node_allocatable": {"cpu": "2", "memory": "8Gi"},
    }
    args.update(kw)
    return podspec.resolve_env(p, container, **args)


def test_resolve_env_all_sources() -> None:
    container = {
        "name": "c",
        "envFrom": [
            {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
            {"secretRef": {"name": "sec"}},
        ],
        "env": [
            {"name": "PLAIN", "value": "v-$(PASSWORD)"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
            {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            # the apiserver serialises an unset divisor as "0"
            {
                "name": "CPU0",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}},
            },
            {
                "name": "MEM_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        "resources": {"limits": {"cpu": "1500m"}},
    }
    env = resolve(
        pod(),
        container,
        configmaps={"cm": {"mode": "fast", "bad key": "x"}},
        secrets={"sec": {"PASSWORD": "s3cret"}},
    )
    assert env["CM_mode"] == "fast"
    assert "CM_bad key" not in env  # invalid env names are skipped, as by the kubelet
    assert env["PASSWORD"] == "s3cret"
    assert env["PLAIN"] == "v-s3cret"
    assert env["KEY"] == "s3cret"
    assert env["CFG"] == "fast"
    assert env["IP"] == "127.0.0.7"
    assert (env["NAME"], env["NS"], env["NODE"], env["APP"]) == ("p1", "ns1", "n1", "web")
    assert env["CPU"] == env["CPU0"] == "2"  # 1.5 cores rounded up
    assert env["MEM_MI"] == str(8 * 1024)  # no memory limit: node allocatable


def test_resolve_env_missing_references() -> None:
    missing_secret = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    }
    with pytest.raises(ConfigError, match='secret "s" not found'):
        resolve(pod(), missing_secret)
    with pytest.raises(ConfigError, match="couldn't find key k in Secret ns1/s"):
        resolve(pod(), missing_secret, secrets={"s": {"other": "1"}})
    optional = {
        "name": "c",
        "env": [
            {
                "name": "X",
                "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k", "optional": True}},
            }
        ],
        "envFrom": [{"secretRef": {"name": "nope", "optional": True}}],
    }
    assert resolve(pod(), optional) == {}
    with pytest.raises(ConfigError, match="unsupported fieldRef"):
        resolve(
            pod(),
            {
                "name": "c",
                "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}],
            },
        )


def test_decode_secret_and_configmap() -> None:
    sec = {"data": {"a": base64.b64encode(b"hello").decode()}, "stringData": {"b": "x"}}
    assert podspec.decode_secret_data(sec) == {"a": "hello", "b": "x"}
    cm = {"data": {"k": "v"}, "binaryData": {"bin": base64.b64encode(b"\x00z").decode()}}
    assert podspec.configmap_data(cm)["bin"] == "\x00z"


def test_command_line_needs_command_and_expands() -> None:
    with pytest.raises(ConfigError, match="must set `command`"):
        podspec.command_line({"name": "c", "args": ["x"]}, {})
    argv = podspec.command_line(
        {"name": "c", "command": ["python", "-m", "http.server"], "args": ["--bind", "$(POD_IP)"]},
        {"POD_IP": "127.0.0.9"},
    )
    assert argv == ["python", "-m", "http.server", "--bind", "127.0.0.9"]


def test_path_map_rewrites_mounted_paths_only() -> None:
    pm = PathMap.build("/state/root", ["/etc/config/", "/dev/termination-log", "//data"])
    assert pm.paths[0] == "/dev/termination-log"
    assert pm.rewrite("/etc/config/app.yaml") == "/state/root/etc/config/app.yaml"
    assert pm.rewrite("/etc/config") == "/state/root/etc/config"
    assert pm.rewrite("--config=/etc/config/a") == "--config=/state/root/etc/config/a"
    assert pm.rewrite("/data/x") == "/state/root/data/x"
    assert pm.rewrite("/etc/configuration") == "/etc/configuration"  # not a path prefix
    assert pm.rewrite("s3://bucket/etc/config") == "s3://bucket/etc/config"
    assert pm.rewrite("relative/etc/config") == "relative/etc/config"
    assert pm.host_path("/dev/termination-log") == "/state/root/dev/termination-log"
    assert "/etc/config=/state/root/etc/config" in pm.mounts_env().split(":")


def test_termination_path_and_grace() -> None:
    assert podspec.termination_path({}) == "/dev/termination-log"
    assert podspec.termination_path({"terminationMessagePath": "/tmp/x"}) == "/tmp/x"
    p = pod(terminationGracePeriodSeconds=5)
    assert podspec.pod_grace_seconds(p) == 5
    p["metadata"]["deletionGracePeriodSeconds"] = 2
    assert podspec.pod_grace_seconds(p) == 2
    assert podspec.pod_grace_seconds(pod()) == 30


# ---------------------------------------------------------------- status


def term(code: int) -> Terminated:
    return Terminated(
        code, status.exit_reason(code), "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"
    )


def cs(
    name: str, state: str = "waiting", code: int | None = None, restarted: bool = False
) -> ContainerState:
    c = ContainerState(name=name, image="img")
    if restarted:
        c.last_terminated = term(1)
    if state == "running":
        c.set_running("2026-01-01T00:00:00Z", "id")
    elif state == "terminated":
        assert code is not None
        c.set_terminated(term(code))
    return c


@pytest.mark.parametrize(
    ("policy", "states", "expected"),
    [
        ("Never", [cs("a")], "Pending"),
        ("Never", [cs("a", "running")], "Running"),
        ("Never", [cs("a", "terminated", 0)], "Succeeded"),
        ("Never", [cs("a", "terminated", 2)], "Failed"),
        ("Never", [cs("a", "terminated", 0), cs("b", "running")], "Running"),
        ("OnFailure", [cs("a", "terminated", 1)], "Running"),
        ("OnFailure", [cs("a", "terminated", 0)], "Succeeded"),
        ("Always", [cs("a", "terminated", 0)], "Running"),
        ("Always", [cs("a", "waiting", restarted=True)], "Running"),  # CrashLoopBackOff
        ("Never", [cs("a", "terminated", 0), cs("b")], "Pending"),
    ],
)
def test_pod_phase_matches_kubelet(
    policy: str, states: list[ContainerState], expected: str
) -> None:
    assert status.pod_phase(policy, [], states) == expected


def test_pod_phase_with_init_containers() -> None:
    assert status.pod_phase("Never", [cs("i", "running")], [cs("a")]) == "Pending"
    assert status.pod_phase("Never", [cs("i", "terminated", 0)], [cs("a", "running")]) == "Running"
    assert (
        status.pod_phase("Never", [cs("i", "terminated", 1)], [cs("a")], init_failed=True)
        == "Failed"
    )


def test_pod_status_conditions_and_transition_times() -> None:
    view = PodView(
        restart_policy="Always",
        pod_ip="127.0.0.3",
        host_ip="127.0.0.1",
        start_time="t0",
        sandbox_ready=True,
    )
    c = cs("web", "running")
    st = status.pod_status(view, [], [c])
    conds = {x["type"]: x for x in st["conditions"]}
    assert st["phase"] == "Running"
    assert st["podIP"] == "127.0.0.3" and st["podIPs"] == [{"ip": "127.0.0.3"}]
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["message"] == "containers with unready status: [web]"
    assert st["containerStatuses"][0]["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    view.prior_conditions = [{**conds["Ready"], "lastTransitionTime": "EARLIER"}]
    again = {x["type"]: x for x in status.pod_status(view, [], [c])["conditions"]}
    assert again["Ready"]["lastTransitionTime"] == "EARLIER"  # unchanged status keeps its time
    c.ready = c.started = True
    ready = {x["type"]: x for x in status.pod_status(view, [], [c])["conditions"]}
    assert ready["Ready"]["status"] == "True"
    assert ready["Ready"]["lastTransitionTime"] != "EARLIER"
    assert ready["Ready"]["reason"] is None and ready["Ready"]["message"] is None


def test_terminated_container_status_shape() -> None:
    c = cs("main", "terminated", 2)
    c.terminated.message = "bad input"  # type: ignore[union-attr]
    api = c.to_api()
    assert api["state"]["terminated"]["exitCode"] == 2
    assert api["state"]["terminated"]["reason"] == "Error"
    assert api["state"]["terminated"]["message"] == "bad input"
    assert api["ready"] is False and api["started"] is False


def test_restore_turns_lost_running_container_into_exit_137() -> None:
    prior = {"restartCount": 2, "state": {"running": {"startedAt": "t"}}, "containerID": "x"}
    c = status.restore("c", "img", prior)
    assert c.state == "terminated" and c.terminated is not None
    assert c.terminated.exit_code == 137 and c.restart_count == 2
    assert status.will_restart("Always", 137) and not status.will_restart("Never", 137)
    assert status.will_restart("OnFailure", 1) and not status.will_restart("OnFailure", 0)


# ---------------------------------------------------------------- scheduling


NODE = scheduling.NodeView(name="n1", labels={"kubernetes.io/hostname": "n1", "disk": "ssd"})


def test_bind_candidate_rules() -> None:
    assert scheduling.bind_candidate(pod(), NODE) == (True, "")
    assert scheduling.bind_candidate(pod(schedulerName="default-scheduler"), NODE)[0]
    assert not scheduling.bind_candidate(pod(schedulerName="other"), NODE)[0]
    assert not scheduling.bind_candidate(pod(nodeName="n2"), NODE)[0]
    assert not scheduling.bind_candidate(pod(schedulingGates=[{"name": "g"}]), NODE)[0]
    assert not scheduling.bind_candidate(pod(nodeSelector={"disk": "hdd"}), NODE)[0]
    assert scheduling.bind_candidate(pod(nodeSelector={"disk": "ssd"}), NODE)[0]
    scoped = scheduling.NodeView(name="n1", labels={}, namespaces=frozenset({"other"}))
    assert scheduling.bind_candidate(pod(), scoped) == (False, "namespace not served by this agent")
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = "t"
    assert not scheduling.bind_candidate(deleting, NODE)[0]
    done = pod()
    done["status"]["phase"] = "Succeeded"
    assert not scheduling.bind_candidate(done, NODE)[0]
    cordoned = scheduling.NodeView(name="n1", labels={}, unschedulable=True)
    assert not scheduling.bind_candidate(pod(), cordoned)[0]


def test_node_affinity_and_taints() -> None:
    aff = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]
            }
        }
    }
    assert scheduling.bind_candidate(pod(affinity=aff), NODE)[0]  # second term matches
    aff_no = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]
            }
        }
    }
    assert not scheduling.bind_candidate(pod(affinity=aff_no), NODE)[0]
    tainted = scheduling.NodeView(
        name="n1", labels={}, taints=({"key": "k", "value": "v", "effect": "NoSchedule"},)
    )
    assert not scheduling.bind_candidate(pod(), tainted)[0]
    tolerated = pod(
        tolerations=[{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]
    )
    assert scheduling.bind_candidate(tolerated, tainted)[0]
    assert scheduling.bind_candidate(pod(tolerations=[{"operator": "Exists"}]), tainted)[0]


def test_fits_counts_requests() -> None:
    def with_req(cpu: str, mem: str = "0") -> Obj:
        return pod(
            containers=[{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]
        )

    alloc = {"cpu": "2", "memory": "4Gi", "pods": "3"}
    assert scheduling.fits(with_req("1"), [with_req("500m")], alloc) == (True, "")
    assert scheduling.fits(with_req("1600m"), [with_req("500m")], alloc) == (
        False,
        "Insufficient cpu",
    )
    assert scheduling.fits(with_req("1", "5Gi"), [], alloc) == (False, "Insufficient memory")
    assert scheduling.fits(pod(), [pod(), pod(), pod()], alloc) == (False, "Too many pods")
    init = pod(
        initContainers=[{"name": "i", "resources": {"requests": {"cpu": "3"}}}],
    )
    assert scheduling.pod_requests(init)["cpu"] == 3


# ---------------------------------------------------------------- routing


def ingress(name: str, rules: list[Obj], default: Obj | None = None, cls: str = "") -> Obj:
    spec: Obj = {"rules": rules}
    if default:
        spec["defaultBackend"] = default
    if cls:
        spec["ingressClassName"] = cls
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def path(p: str, svc: str, ptype: str = "Prefix", port: Obj | None = None) -> Obj:
    return {
        "path": p,
        "pathType": ptype,
        "backend": {"service": {"name": svc, "port": port or {"number": 80}}},
    }


def test_route_matching_precedence() -> None:
    routes = routing.build_routes(
        [
            ingress(
                "a",
                [
                    {
                        "host": "api.local",
                        "http": {
                            "paths": [
                                path("/", "root"),
                                path("/v1", "v1"),
                                path("/v1/predict", "exact", "Exact"),
                            ]
                        },
                    },
                    {"host": "*.wild.local", "http": {"paths": [path("/", "wild")]}},
                    {"http": {"paths": [path("/", "anyhost")]}},
                ],
            ),
            ingress("other-class", [{"http": {"paths": [path("/", "ignored")]}}], cls="nginx"),
        ],
        ingress_class="",
    )

    def svc(host: str, p: str) -> str | None:
        r = routing.match(routes, host, p)
        return r.service if r else None

    assert svc("api.local", "/v1/predict") == "exact"
    assert svc("api.local", "/v1/predict/x") == "v1"
    assert svc("API.local:8080", "/v1") == "v1"
    assert svc("api.local", "/v10") == "root"  # element-wise prefix: /v1 does not match /v10
    assert svc("x.wild.local", "/") == "wild"
    assert svc("a.b.wild.local", "/") == "anyhost"  # wildcard covers one label only
    assert svc("elsewhere", "/z") == "anyhost"
    only_nginx = routing.build_routes(
        [ingress("c", [{"http": {"paths": [path("/", "n")]}}], cls="nginx")], "kubetrain"
    )
    assert only_nginx == []


def test_oldest_ingress_wins_ties() -> None:
    def ing(ns: str, ts: str, svc: str) -> Obj:
        i = ingress(
            "x",
            [{"http": {"paths": [path("/", svc)]}}],
            default={"service": {"name": svc + "-d", "port": {"number": 80}}},
        )
        i["metadata"].update(namespace=ns, creationTimestamp=ts)
        return i

    routes = routing.build_routes(
        [ing("b", "2026-01-02T00:00:00Z", "new"), ing("a", "2026-01-01T00:00:00Z", "old")]
    )
    r = routing.match(routes, "h", "/x")
    assert r is not None and r.service == "old"
    only_default = [x for x in routes if x.default]
    assert routing.match(only_default, "h", "/x").service == "old-d"  # type: ignore[union-attr]


def test_default_backend_and_no_match() -> None:
    routes = routing.build_routes(
        [
            ingress(
                "d",
                [{"host": "h", "http": {"paths": [path("/x", "x", "Exact")]}}],
                default={"service": {"name": "def", "port": {"name": "http"}}},
            )
        ]
    )
    r = routing.match(routes, "h", "/y")
    assert r is not None and r.service == "def" and r.port == "http"
    assert routing.match(routing.build_routes([]), "h", "/") is None


SERVICE: Obj = {
    "metadata": {"name": "web", "namespace": "ns"},
    "spec": {
        "selector": {"app": "web"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "raw", "port": 81, "targetPort": 9000},
            {"name": "same", "port": 82},
            {"name": "udp", "port": 83, "targetPort": "http", "protocol": "UDP"},
        ],
    },
}


def ep_pod(ip: str, ready: str = "True", **over: Any) -> Obj:
    """A pod as the agent writes it: bound, Running, podIP(s), Ready condition."""
    p: Obj = {
        "metadata": {"name": f"p-{ip}", "namespace": "ns", "labels": {"app": "web", "x": "1"}},
        "spec": {
            "nodeName": "n1",
            "containers": [{"ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }
    for key, value in over.items():
        section, field = key.split("__")
        if value is None:
            p[section].pop(field, None)
        else:
            p[section][field] = value
    return p


def port_of(service: Obj, port: int | str) -> Obj:
    found, why = routing.service_port(service, port)
    assert found is not None, why
    return found


def test_service_port_lookup_and_source_problems() -> None:
    assert port_of(SERVICE, 80)["name"] == "http"
    assert port_of(SERVICE, "raw")["port"] == 81
    assert routing.service_port(SERVICE, 99) == (None, "service has no port 99")
    assert routing.service_port(SERVICE, "nope") == (None, "service has no port 'nope'")
    assert routing.service_port(None, 80) == (None, "service not found")
    assert routing.endpoint_source_problem(SERVICE) == ""
    ext = {
        "metadata": {"namespace": "ns"},
        "spec": {"type": "ExternalName", "selector": {"a": "b"}},
    }
    assert "ExternalName" in routing.endpoint_source_problem(ext)
    bare = {"metadata": {"namespace": "ns"}, "spec": {"ports": [{"port": 80}]}}
    assert "no selector" in routing.endpoint_source_problem(bare)
    assert routing.pod_endpoints(ext, {"port": 80}, [ep_pod("127.0.0.2")]) == []
    assert routing.pod_endpoints(bare, {"port": 80}, [ep_pod("127.0.0.2")]) == []


def test_pod_endpoints_match_the_endpointslice_controller() -> None:
    http = port_of(SERVICE, 80)
    pods = [
        ep_pod("127.0.0.2"),
        ep_pod("127.0.0.3", "False"),  # not Ready
        ep_pod("127.0.0.4", metadata__labels={"app": "other"}),  # selector mismatch
        ep_pod("127.0.0.5", metadata__namespace="ns2"),  # other namespace
        ep_pod("127.0.0.6", metadata__deletionTimestamp="2026-01-01T00:00:00Z"),  # terminating
        ep_pod("127.0.0.7", status__phase="Succeeded"),  # terminal
        ep_pod("127.0.0.8", spec__nodeName=None),  # not bound to a node
        ep_pod("127.0.0.9", status__phase="Pending"),  # Ready and with an IP: published
        ep_pod("127.0.0.10", status__conditions=None),  # no conditions: not ready
    ]
    no_ip = ep_pod("127.0.0.11")
    no_ip["status"].pop("podIP")
    no_ip["status"].pop("podIPs")
    pods.append(no_ip)
    assert routing.pod_endpoints(SERVICE, http, pods) == [
        ("127.0.0.2", 8000),
        ("127.0.0.9", 8000),
    ]
    # Numeric targetPort is used as is; an unset one means the Service port.
    assert routing.pod_endpoints(SERVICE, port_of(SERVICE, 81), pods[:1]) == [("127.0.0.2", 9000)]
    assert routing.pod_endpoints(SERVICE, port_of(SERVICE, 82), pods[:1]) == [("127.0.0.2", 82)]
    # A named targetPort needs a container port of that name AND the Service's protocol.
    assert routing.pod_endpoints(SERVICE, port_of(SERVICE, 83), pods[:1]) == []
    unnamed = ep_pod("127.0.0.12", spec__containers=[{"ports": [{"containerPort": 8000}]}])
    assert routing.pod_endpoints(SERVICE, http, [unnamed]) == []
    # ... found in a sidecar (restartPolicy Always) init container, not in a plain one.
    init_port = [{"ports": [{"name": "http", "containerPort": 7000}]}]
    plain = ep_pod("127.0.0.13", spec__containers=[], spec__initContainers=init_port)
    sidecar = ep_pod(
        "127.0.0.14",
        spec__containers=[],
        spec__initContainers=[{**init_port[0], "restartPolicy": "Always"}],
    )
    assert routing.pod_endpoints(SERVICE, http, [plain, sidecar]) == [("127.0.0.14", 7000)]
    # podIPs is what the controller reads; podIP is the fallback; IPv6 is not IPv4.
    dual = ep_pod("127.0.0.15", status__podIPs=[{"ip": "127.0.0.15"}, {"ip": "::1"}])
    legacy = ep_pod("127.0.0.16", status__podIPs=None)
    assert routing.pod_endpoints(SERVICE, http, [dual, legacy]) == [
        ("127.0.0.15", 8000),
        ("127.0.0.16", 8000),
    ]
    # publishNotReadyAddresses: not-ready, terminating and unbound pods count as ready too.
    pna = {**SERVICE, "spec": {**SERVICE["spec"], "publishNotReadyAddresses": True}}
    assert routing.pod_endpoints(pna, http, pods) == [
        ("127.0.0.10", 8000),
        ("127.0.0.2", 8000),
        ("127.0.0.3", 8000),
        ("127.0.0.6", 8000),
        ("127.0.0.8", 8000),
        ("127.0.0.9", 8000),
    ]


def test_ingress_targets_loopback_endpoints_only() -> None:
    keep, refused = routing.split_loopback(
        [("127.0.0.2", 80), ("192.0.2.10", 80), ("127.255.0.3", 81), ("10.244.0.5", 80)]
    )
    assert keep == [("127.0.0.2", 80), ("127.255.0.3", 81)]
    assert refused == ["192.0.2.10", "10.244.0.5"]
