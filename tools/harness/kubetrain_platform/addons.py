"""The cluster add-ons every Kubernetes user expects: DNS, an Ingress controller, storage.

Design
------
Pure builders of the manifests `kubetrain-platform up` applies with server-side apply, as
a kind or k3s cluster ships them:

* **CoreDNS** as the `coredns` Deployment behind the standard `kube-dns` Service at the
  Service CIDR's tenth address (what kubelet hands pods as their nameserver). It answers
  only for the cluster domain: there is nothing upstream to forward to from this machine.
* **Traefik** as the IngressClass `traefik`, in the host's network namespace and bound to
  127.0.0.1 only, so the host reaches every Ingress on `KUBETRAIN_INGRESS_URL` the way a
  laptop user reaches kind's port mapping, and nothing outside the machine can.
* **Storage**: the default StorageClass `local` (no provisioner, `WaitForFirstConsumer`) with
  static hostPath PersistentVolumes under the state dir, the pattern Kubernetes documents for
  local volumes. The chart's bundled MinIO and MLflow bind to them unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubetrain_platform.nodeconf import NodeLayout

#: (namespace, kind, name) that `up` waits for after applying.
WAIT_FOR = (("kube-system", "deployment", "coredns"), ("kube-system", "deployment", "traefik"))
#: Static volumes offered to claims: enough for the chart's MinIO and MLflow plus test releases.
VOLUMES = 24
VOLUME_SIZE = "20Gi"

COREFILE = """\
.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    cache 30
    loop
    reload
    loadbalance
}
"""


def manifests(
    layout: NodeLayout,
    *,
    images: dict[str, str],
    ingress_port: int,
    ingress_admin_port: int,
    volumes_dir: Path,
) -> str:
    """Every add-on object as one multi-document JSON stream for `kubectl apply -f -`."""
    docs = [
        *coredns(layout, images["coredns"]),
        *traefik(images["traefik"], ingress_port, ingress_admin_port),
        *storage(layout, volumes_dir),
    ]
    return "\n".join(json.dumps(d) for d in docs) + "\n"


def _restricted_container() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _cluster_identity(
    account: str, role: str, ns: str, rules: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A ServiceAccount with a ClusterRole of RULES bound to it (both named ROLE)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        },
    ]


def coredns(layout: NodeLayout, image: str) -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    ns = "kube-system"
    return [
        *_cluster_identity(
            "coredns",
            "system:coredns",
            ns,
            [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": ns},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                # containerd opens ports below 1024 to unprivileged pod users
                                # (enable_unprivileged_ports), so :53 needs no capability.
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": _restricted_container(),
                                "volumeMounts": [
                                    {
                                        "name": "config",
                                        "mountPath": "/etc/coredns",
                                        "readOnly": True,
                                    }
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": ns,
                "labels": {**labels, "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {
                "selector": labels,
                "clusterIP": layout.dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
    ]


def traefik(image: str, port: int, admin_port: int) -> list[dict[str, Any]]:
    ns = "kube-system"
    labels = {"app.kubernetes.io/name": "traefik"}
    return [
        *_cluster_identity(
            "traefik",
            "traefik-ingress-controller",
            ns,
            [
                {
                    "apiGroups": [""],
                    "resources": ["services", "secrets", "nodes", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["ingresses", "ingressclasses"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["ingresses/status"],
                    "verbs": ["update"],
                },
            ],
        ),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {
                "name": "traefik",
                # The only Ingress controller here: Ingresses without a class use it too.
                "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
            },
            "spec": {"controller": "traefik.io/ingress-controller"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "traefik", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                # Host ports cannot be shared: the old pod must go before the new one binds.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "traefik",
                        "hostNetwork": True,
                        "dnsPolicy": "ClusterFirstWithHostNet",
                        "securityContext": {
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "runAsNonRoot": True,
                        },
                        "containers": [
                            {
                                "name": "traefik",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "args": [
                                    f"--entryPoints.web.address=127.0.0.1:{port}",
                                    f"--entryPoints.traefik.address=127.0.0.1:{admin_port}",
                                    "--providers.kubernetesingress=true",
                                    "--providers.kubernetesingress.ingressendpoint.ip=127.0.0.1",
                                    "--ping=true",
                                    "--ping.entryPoint=traefik",
                                    "--metrics.prometheus=true",
                                    "--metrics.prometheus.entryPoint=traefik",
                                    "--log.level=WARN",
                                    "--global.checknewversion=false",
                                    "--global.sendanonymoususage=false",
                                ],
                                "readinessProbe": {
                                    # Traefik opens its ping entry point about a second in.
                                    "initialDelaySeconds": 2,
                                    "httpGet": {
                                        "path": "/ping",
                                        "port": admin_port,
                                        "host": "127.0.0.1",
                                    },
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {
                                        "path": "/ping",
                                        "port": admin_port,
                                        "host": "127.0.0.1",
                                    },
                                    "periodSeconds": 10,
                                },
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "64Mi"},
                                    "limits": {"memory": "256Mi"},
                                },
                                "securityContext": _restricted_container(),
                            }
                        ],
                    },
                },
            },
        },
    ]


def storage(layout: NodeLayout, volumes_dir: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        }
    ]
    for i in range(VOLUMES):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": f"local-{i}",
                    "labels": {"kubetrain.dev/local-volume": "true"},
                },
                "spec": {
                    "capacity": {"storage": VOLUME_SIZE},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "local",
                    "hostPath": {
                        "path": str(volumes_dir / f"local-{i}"),
                        "type": "DirectoryOrCreate",
                    },
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/hostname",
                                            "operator": "In",
                                            "values": [layout.node_name],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
        )
    return docs


def prepare_volumes(volumes_dir: Path) -> None:
    """Directories behind the static volumes, writable by any pod UID (hostPath volumes get
    no fsGroup ownership change)."""
    for i in range(VOLUMES):
        d = volumes_dir / f"local-{i}"
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o777)
