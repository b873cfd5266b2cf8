"""kubetrain node agent: a local "kubelet" that runs pods as processes, plus a local ingress.

Dev and test tooling for the local platform (see docs/nodeagent.md). The agent registers a
Node with the real kube-apiserver, binds unscheduled pods to it, and runs every container's
`command`/`args` as a local process group in the project's virtualenv (the image is ignored).
It writes pod status back the way the kubelet does, so the unmodified Job, ReplicaSet,
Deployment and EndpointSlice controllers drive it. `ingress.py` is a small HTTP reverse proxy
that routes by networking.k8s.io/v1 Ingress rules to ready EndpointSlice addresses.

Module map (pure logic first, I/O last):
    podspec     env resolution, $(VAR) expansion, quantities, mount path rewriting (pure)
    status      container/pod status model and kubelet phase rules (pure)
    scheduling  which pods this node may bind and whether they fit (pure)
    routing     Ingress host/path matching and endpoint resolution (pure)
    kube        the kubernetes client wrapper and list+watch informers
    podnet      pod IP range: a private range made local on lo (AnyIP), or loopback
    volumes     materialising configMap/secret/emptyDir/projected/PVC volumes as directories
    runtime     process groups, pidfd waits, termination
    probes      HTTP/TCP/exec probes
    pod         one pod's lifecycle (the "pod worker")
    node        Node registration, Lease heartbeats
    agent       ties it together: watches, binding, workers, shutdown
    ingress     the reverse proxy server
    cli         `kubetrain-nodeagent run|ingress`
"""
