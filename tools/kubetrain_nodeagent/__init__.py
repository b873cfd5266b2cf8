"""kubetrain node agent: a local "kubelet" that runs pods as processes, plus a local ingress.

Dev and test tooling for the local platform (see docs/nodeagent.md). The agent registers a
Node with the real kube-apiserver, binds unscheduled pods to it, and runs every container's
`command`/`args` as a local process group in the project's virtualenv (the image is ignored).
It writes pod status back the way the kubelet does, so the unmodified Job, ReplicaSet and
Deployment controllers drive it. `ingress.py` is a small HTTP reverse proxy that routes by
networking.k8s.io/v1 Ingress rules to a Service's ready pods.

Loopback only: on this machine servers and tests may only send traffic to 127.0.0.0/8, so
pod IPs come from a loopback range (default 127.0.0.0/24, never 127.0.0.1) and the agent
never adds routes. The apiserver rejects loopback addresses in EndpointSlices, so the
EndpointSlice controller publishes no endpoints for these pods; the ingress computes a
Service's ready endpoints from its selector and the pods, with that controller's rules.

Module map (pure logic first, I/O last):
    podspec     env resolution, $(VAR) expansion, quantities, mount path rewriting (pure)
    status      container/pod status model and kubelet phase rules (pure)
    scheduling  which pods this node may bind and whether they fit (pure)
    routing     Ingress host/path matching, Service -> ready pod endpoints (pure)
    kube        the kubernetes client wrapper and list+watch informers
    podnet      pod IP range: loopback only (127.0.0.0/8), validated; no routes
    volumes     materialising configMap/secret/emptyDir/projected/PVC volumes as directories
    runtime     process groups, pidfd waits, termination
    probes      HTTP/TCP/exec probes
    pod         one pod's lifecycle (the "pod worker")
    node        Node registration, Lease heartbeats
    agent       ties it together: watches, binding, workers, shutdown
    ingress     the reverse proxy server
    cli         `kubetrain-nodeagent run|ingress`
"""
