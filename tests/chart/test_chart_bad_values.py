"""Bad values are refused with a message that names the value, and nothing is rendered."""

from __future__ import annotations

import pytest

from chartkit import render

SCHEMA = "values don't meet the specifications of the schema"
# values.schema.json's definitions.memory: a string, a number more than zero, one of the
# suffixes Ki Mi Gi Ti k M G T or none (the description says so in words, for editors)
NOT_MEMORY = "does not match pattern '^([0-9]*[1-9][0-9]*(\\\\.[0-9]+)?|[0-9]+\\\\.[0-9]*[1-9][0-9]*)(k|M|G|T|Ki|Mi|Gi|Ti)?$'"


def not_memory(path: str, value: str) -> list[str]:
    return [SCHEMA, f"at '{path}': '{value}' {NOT_MEMORY}"]


MISSING_DEFAULT = ("If the release was upgraded from an older chart version with --reuse-values, "
                   "helm kept the old chart's defaults, which lack this value: upgrade with "
                   "--reset-then-reuse-values instead.")
LEGACY = ("{key} is not a value of this chart (it is a dask/helm-chart key, or one that lives "
          "elsewhere here): set {instead} instead, and remove {key}.")

# id → (values YAML, extra helm args, expected message fragments)
CASES = {
    "executor type warm": (
        "worker: {executor: {type: warm}}", (),
        [SCHEMA, "at '/worker/executor/type': value must be one of 'isolated_warm', 'direct'"]),
    "processes 0": (
        "worker: {processes: 0}", (),
        [SCHEMA, "at '/worker/processes': minimum: got 0, want 1"]),
    "threads two": (
        "worker: {threads: two}", (),
        [SCHEMA, "at '/worker/threads': got string, want integer"]),
    "memory lots": (
        "worker: {memoryPerProcess: lots}", (),
        not_memory("/worker/memoryPerProcess", "lots")),
    "memory in dask's GB spelling": (
        "worker: {executor: {poolMemoryPerProcess: 2GB}}", (),
        not_memory("/worker/executor/poolMemoryPerProcess", "2GB")),
    "memory in Kubernetes' milli-bytes": (
        "worker: {memoryOverhead: 512000000000m}", (),
        not_memory("/worker/memoryOverhead", "512000000000m")),
    "memory in exabytes": (
        "worker: {executor: {memLimitPerProcess: 1Ei}}", (),
        not_memory("/worker/executor/memLimitPerProcess", "1Ei")),
    "memory as a YAML number": (
        "worker: {memoryPerProcess: 2}", (),
        [SCHEMA, "at '/worker/memoryPerProcess': got number, want string"]),
    "explicit resource memory in words": (
        "worker: {resources: {limits: {memory: 16 gigs}}}", (),
        not_memory("/worker/resources/limits/memory", "16 gigs")),
    "zero memory": (
        "worker: {memoryPerProcess: '0Mi'}", (),
        not_memory("/worker/memoryPerProcess", "0Mi")),
    "unknown key worker.proceses": (
        "worker: {proceses: 4}", (),
        [SCHEMA, "at '/worker': additional properties 'proceses' not allowed"]),
    "unknown top-level key": (
        "worker_pods: {processes: 4}", (),
        [SCHEMA, "additional properties 'worker_pods' not allowed"]),
    "dask-chart key workers": (
        "workers: {replicas: 4}", (),
        [LEGACY.format(key="workers", instead="worker (worker.replicas, worker.processes, "
                       "worker.threads, worker.resources, ...)")]),
    "dask-chart key worker.env": (
        "worker: {env: [{name: A, value: b}]}", (),
        [LEGACY.format(key="worker.env", instead="worker.extraEnv (a Kubernetes EnvVar list)")]),
    "dask-chart key worker.mounts": (
        "worker: {mounts: {volumes: [], volumeMounts: []}}", (),
        [LEGACY.format(key="worker.mounts", instead="worker.extraVolumes (a Volume list) and "
                       "worker.extraVolumeMounts (a VolumeMount list)")]),
    "dask-chart key worker.threads_per_worker": (
        "worker: {threads_per_worker: 2}", (),
        [LEGACY.format(key="worker.threads_per_worker", instead="worker.threads")]),
    "executor key one level too high": (
        "worker: {maxProcessReuse: 1}", (),
        [LEGACY.format(key="worker.maxProcessReuse", instead="worker.executor.maxProcessReuse")]),
    "dask-chart key worker.default_resources": (
        "worker: {default_resources: {cpu: 1}}", (),
        [LEGACY.format(key="worker.default_resources",
                       instead="worker.resources (unset keys are derived from the mode)")]),
    "dask-chart key worker.image": (
        "worker: {image: {repository: daskdev/dask}}", (),
        [LEGACY.format(key="worker.image", instead="image (image.repository, image.tag, "
                       "image.digest: one image for every pod)")]),
    "dask-chart key scheduler.env": (
        "scheduler: {env: [{name: A, value: b}]}", (),
        [LEGACY.format(key="scheduler.env", instead="scheduler.extraEnv (a Kubernetes EnvVar list)")]),
    "dask-chart key scheduler.serviceType": (
        "scheduler: {serviceType: LoadBalancer}", (),
        [LEGACY.format(key="scheduler.serviceType", instead="scheduler.service.type")]),
    "dask-chart key webUI": (
        "webUI: {servicePort: 80}", (),
        [LEGACY.format(key="webUI", instead="scheduler.ingress (an Ingress for the dashboard) "
                       "or scheduler.service")]),
    "dask-chart key jupyter": (
        "jupyter: {enabled: true}", (),
        [LEGACY.format(key="jupyter", instead="nothing: this chart runs no Jupyter server; "
                       "connect your own client to the scheduler (NOTES.txt, Connect)")]),
    "unknown mode": (
        "mode: fast", (),
        [SCHEMA, "at '/mode': value must be one of 'debug-isolated', 'debug-parallel', "
                 "'diagnose-fresh-venv', 'fresh-process', 'prod-warm'"]),
    "image digest without sha256": (
        "image: {digest: abc123}", (),
        [SCHEMA, "at '/image/digest': 'abc123' does not match pattern"]),
    "root with runAsNonRoot (global)": (
        "podSecurityContext: {runAsUser: 0}", (),
        ["the scheduler pod would run as root (runAsUser: 0) with runAsNonRoot: true: the "
         "kubelet refuses to start such a container (CreateContainerConfigError). Set runAsUser "
         "to a non-zero uid (the image's user is 10001), or, if you really want root, set "
         "runAsNonRoot: false too"]),
    "root with runAsNonRoot (worker container override)": (
        "worker: {containerSecurityContext: {runAsUser: 0}}", (),
        ["the worker pod would run as root (runAsUser: 0) with runAsNonRoot: true"]),
    "service account annotations without create": (
        "serviceAccount: {annotations: {eks.amazonaws.com/role-arn: x}}", (),
        ["serviceAccount.annotations are set but serviceAccount.create=false: the chart puts "
         "them only on a ServiceAccount it creates. Set serviceAccount.create: true, or annotate "
         "your own account and name it in serviceAccount.name."]),
    "Recreate with rollingUpdate": (
        "worker: {strategy: {type: Recreate, rollingUpdate: {maxSurge: 1}}}", (),
        ["worker.strategy.rollingUpdate is set but worker.strategy.type=Recreate: Kubernetes "
         "refuses rollingUpdate with Recreate. Remove rollingUpdate, or set type: RollingUpdate."]),
    "rolling update that cannot progress": (
        "worker: {strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: '0%'}}}",
        (), ["worker.strategy.rollingUpdate has maxSurge and maxUnavailable both 0: Kubernetes "
             "refuses it"]),
    "strategy set to null": (
        "worker: {strategy: null}", (),
        ["worker.strategy has no type: set worker.strategy.type to Recreate (the chart's "
         "default: a mode switch never mixes old-mode and new-mode workers) or RollingUpdate. "
         + MISSING_DEFAULT]),
    "probe set to null": (
        "scheduler: {livenessProbe: null}", (),
        ["scheduler.livenessProbe is missing (null): to turn the probe off set "
         "scheduler.livenessProbe.enabled: false. " + MISSING_DEFAULT]),
    "mode set to null": (
        "mode: null", (),
        ["mode is not set: set it to one of debug-isolated, debug-parallel, diagnose-fresh-venv, "
         "fresh-process, prod-warm (prod-warm is the chart's default). " + MISSING_DEFAULT]),
    "strategy type": (
        "worker: {strategy: {type: BlueGreen}}", (),
        [SCHEMA, "at '/worker/strategy/type': value must be one of 'Recreate', 'RollingUpdate'"]),
    "liveness successThreshold": (
        "worker: {livenessProbe: {successThreshold: 3}}", (),
        [SCHEMA, "at '/worker/livenessProbe/successThreshold': value must be 1"]),
    "readiness terminationGracePeriodSeconds": (
        "scheduler: {readinessProbe: {terminationGracePeriodSeconds: 5}}", (),
        [SCHEMA, "at '/scheduler/readinessProbe': additional properties "
                 "'terminationGracePeriodSeconds' not allowed"]),
    "probe with an action": (
        "worker: {livenessProbe: {exec: {command: [true]}}}", (),
        [SCHEMA, "at '/worker/livenessProbe': additional properties 'exec' not allowed"]),
    "mount of a volume the pod lacks": (
        "worker: {extraVolumeMounts: [{name: ca, mountPath: /etc/ca}]}", (),
        ['worker.extraVolumeMounts mounts volume "ca", which the pod does not have: add it to '
         "worker.extraVolumes (volumes: tmp, bundle-cache, venv-cache)."]),
    "extra volume named like the chart's": (
        "scheduler: {extraVolumes: [{name: tmp, emptyDir: {}}]}", (),
        ['scheduler.extraVolumes has a second volume named "tmp" (the chart\'s own volumes are '
         "tmp): Kubernetes refuses duplicate volume names. Rename it."]),
    "extra mount over the venv cache": (
        "worker: {extraVolumes: [{name: fast, emptyDir: {}}], "
        "extraVolumeMounts: [{name: fast, mountPath: /var/cache/modelops/envs/}]}", (),
        ['worker.extraVolumeMounts mounts "fast" at /var/cache/modelops/envs, where the chart '
         "mounts the venv cache: Kubernetes refuses two mounts at one path."]),
    "extra mount at a relative path": (
        "worker: {extraVolumes: [{name: a, emptyDir: {}}], "
        "extraVolumeMounts: [{name: a, mountPath: data}]}", (),
        ['worker.extraVolumeMounts entry "a" needs an absolute mountPath (got "data").']),
    "two extra mounts at one path": (
        "worker: {extraVolumes: [{name: a, emptyDir: {}}, {name: b, emptyDir: {}}], "
        "extraVolumeMounts: [{name: a, mountPath: /data}, {name: b, mountPath: /data}]}", (),
        ["worker.extraVolumeMounts mounts two volumes at /data: Kubernetes refuses two mounts "
         "at one path."]),
    "loadBalancerIP on a ClusterIP service": (
        "scheduler: {service: {loadBalancerIP: 10.0.0.1}}", (),
        ["scheduler.service.loadBalancerIP is set but scheduler.service.type=ClusterIP: "
         "Kubernetes accepts it only for type LoadBalancer."]),
    "loadBalancerSourceRanges on a NodePort service": (
        "scheduler: {service: {type: NodePort, loadBalancerSourceRanges: [10.0.0.0/8]}}", (),
        ["scheduler.service.loadBalancerSourceRanges is set but scheduler.service.type=NodePort"]),
    "source range that is no CIDR": (
        "scheduler: {service: {type: LoadBalancer, loadBalancerSourceRanges: [10.0.0.1]}}", (),
        [SCHEMA, "at '/scheduler/service/loadBalancerSourceRanges/0': '10.0.0.1' does not match "
                 "pattern"]),
    "ingress path type": (
        "scheduler: {ingress: {enabled: true, pathType: Regex}}", (),
        [SCHEMA, "at '/scheduler/ingress/pathType': value must be one of 'Prefix', 'Exact', "
                 "'ImplementationSpecific'"]),
    "ingress host with a scheme": (
        "scheduler: {ingress: {enabled: true, hosts: ['https://dask.example.com']}}", (),
        [SCHEMA, "at '/scheduler/ingress/hosts/0': 'https://dask.example.com' does not match "
                 "pattern"]),
    "ingress host that is an IP": (
        "scheduler: {ingress: {enabled: true, hosts: ['10.0.0.1']}}", (),
        [SCHEMA, "at '/scheduler/ingress/hosts/0': '10.0.0.1' does not match pattern"]),
    "duplicate topology spread constraint": (
        "worker: {topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, "
        "whenUnsatisfiable: DoNotSchedule}, {maxSkew: 2, topologyKey: zone, "
        "whenUnsatisfiable: DoNotSchedule}]}", (),
        ["worker.topologySpreadConstraints has two constraints with topologyKey zone and "
         "whenUnsatisfiable DoNotSchedule: Kubernetes refuses the duplicate."]),
    "priority class name with capitals": (
        "worker: {priorityClassName: High}", (),
        [SCHEMA, "at '/worker/priorityClassName': 'High' does not match pattern"]),
    "topology spread without whenUnsatisfiable": (
        "worker: {topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone}]}", (),
        [SCHEMA, "at '/worker/topologySpreadConstraints/0': missing property 'whenUnsatisfiable'"]),
    "negative TTL": (
        "worker: {executor: {processTTL: -5}}", (),
        [SCHEMA, "at '/worker/executor/processTTL': minimum: got -5, want 1"]),
    "zero native threads": (
        "worker: {executor: {nativeThreads: 0}}", (),
        [SCHEMA, "at '/worker/executor/nativeThreads': minimum: got 0, want 1"]),
    "native threads as extraEnv": (
        "worker: {extraEnv: [{name: MODELOPS_NATIVE_THREADS, value: '4'}]}", (),
        ["MODELOPS_NATIVE_THREADS", "worker.executor.nativeThreads"]),
    "a native thread variable as extraEnv": (
        "worker: {extraEnv: [{name: OMP_NUM_THREADS, value: '4'}]}", (),
        ["worker.extraEnv sets OMP_NUM_THREADS, which the chart renders from "
         "worker.executor.nativeThreads"]),
    "unknown freshProcessFrom": (
        "worker: {executor: {freshProcessFrom: zygote}}", (),
        [SCHEMA, "/worker/executor/freshProcessFrom", "template", "exec"]),
    "negative freshVenvsAhead": (
        "worker: {executor: {freshVenvsAhead: -1}}", (),
        [SCHEMA, "at '/worker/executor/freshVenvsAhead': minimum: got -1, want 0"]),
    "freshProcessFrom as extraEnv": (
        "worker: {extraEnv: [{name: MODELOPS_FRESH_PROCESS_FROM, value: exec}]}", (),
        ["MODELOPS_FRESH_PROCESS_FROM", "worker.executor.freshProcessFrom"]),
    "zero task timeout": (
        "worker: {executor: {taskTimeout: 0}}", (),
        [SCHEMA, "/worker/executor/taskTimeout"]),
    "pull policy": (
        "image: {pullPolicy: Sometimes}", (),
        [SCHEMA, "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"]),
    "service type": (
        "scheduler: {service: {type: Ingress}}", (),
        [SCHEMA, "at '/scheduler/service/type': value must be one of 'ClusterIP', 'NodePort', "
                 "'LoadBalancer'"]),
    "aggregation resource removed": (
        "worker: {daskResources: {aggregation: null}}", (),
        [SCHEMA, "at '/worker/daskResources': missing property 'aggregation'"]),
    "bad passthrough name": (
        "worker: {executor: {envPassthrough: ['MY TOKEN']}}", (),
        [SCHEMA, "at '/worker/executor/envPassthrough/0': 'MY TOKEN' does not match pattern"]),
    "log level": (
        "worker: {logLevel: verbose}", (),
        [SCHEMA, "at '/worker/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"]),
    "undersized explicit memory limit": (
        "worker: {resources: {limits: {memory: 4Gi}}}", (),
        ["worker.resources.limits.memory=4Gi is smaller than the worker mode needs: "
         "4 processes × (1024Mi memoryPerProcess + 2048Mi poolMemoryPerProcess) + "
         "512Mi memoryOverhead = 12800Mi. Raise it to at least 12800Mi"]),
    "undersized explicit memory request (direct)": (
        "worker: {executor: {type: direct}, resources: {requests: {memory: 2Gi}}}", (),
        ["worker.resources.requests.memory=2Gi is smaller than the worker mode needs: "
         "4 processes × (1024Mi memoryPerProcess + 0Mi warm pool (direct)) + "
         "512Mi memoryOverhead = 4608Mi"]),
    "extraEnv sets an owned MODELOPS variable": (
        "worker: {extraEnv: [{name: MODELOPS_EXECUTOR_TYPE, value: direct}]}", (),
        ["worker.extraEnv sets MODELOPS_EXECUTOR_TYPE, which the chart renders from "
         "worker.executor.type. Remove it from worker.extraEnv and set worker.executor.type"]),
    "extraEnv sets an unset optional MODELOPS variable": (
        "worker: {extraEnv: [{name: MODELOPS_TASK_TIMEOUT, value: '5'}]}", (),
        ["worker.extraEnv sets MODELOPS_TASK_TIMEOUT, which the chart renders from "
         "worker.executor.taskTimeout"]),
    "extraEnv moves the uv cache": (
        "worker: {extraEnv: [{name: UV_CACHE_DIR, value: /tmp/uv}]}", (),
        ["worker.extraEnv sets UV_CACHE_DIR, which the chart fixes because uv's cache must be "
         "on the venv-cache volume so that venvs can hard-link from it"]),
    "extraArgs repeats --nthreads": (
        "worker: {extraArgs: ['--nthreads', '8']}", (),
        ["worker.extraArgs contains --nthreads, which the chart renders from worker.threads"]),
    "extraArgs repeats --memory-limit=": (
        "worker: {extraArgs: ['--memory-limit=8GB']}", (),
        ["worker.extraArgs contains --memory-limit, which the chart renders from "
         "worker.memoryPerProcess"]),
    "extraArgs turns the dashboard off": (
        "worker: {extraArgs: ['--no-dashboard']}", (),
        ["worker.extraArgs contains --no-dashboard, which the chart does not allow: the "
         "dashboard serves the probes' /health and the scraped /metrics"]),
    "a writable path holding the caches": (
        "worker: {executor: {writablePaths: [/tmp, /var/cache]}}", (),
        ["worker.executor.writablePaths has /var/cache, which is, holds or lies in the "
         "worker's caches (/var/cache/modelops: the unpacked bundles and the venvs, "
         "read-only by design"]),
    "a writable path inside the bundle cache": (
        "worker: {executor: {writablePaths: [/var/cache/modelops/bundles/x/]}}", (),
        ["worker.executor.writablePaths has /var/cache/modelops/bundles/x/, which is, holds "
         "or lies in the worker's caches"]),
    "the root as a writable path": (
        "worker: {executor: {writablePaths: [/]}}", (),
        ["worker.executor.writablePaths has /, which is, holds or lies in the worker's caches"]),
    "fresh venv with the direct executor": (
        "worker: {executor: {type: direct, forceFreshVenv: true}}", (),
        ["worker.executor.forceFreshVenv=true needs worker.executor.type=isolated_warm"]),
    "warm process limit above the pool budget": (
        "worker: {executor: {memLimitPerProcess: 4Gi, poolMemoryPerProcess: 2Gi}}", (),
        ["worker.executor.memLimitPerProcess=4Gi (4096Mi) is larger than "
         "worker.executor.poolMemoryPerProcess=2Gi (2048Mi)"]),
    # A cache budget at or above its emptyDir's sizeLimit: evicted before GC ever runs
    "venv budget equal to the venv volume's limit": (
        "worker: {cache: {venvsBudget: 10Gi}}", (),
        ["worker.cache.venvsBudget=10Gi (10737418240 bytes) is not below "
         "worker.cache.venvsSizeLimit=10Gi (10737418240 bytes), the sizeLimit of the venv-cache "
         "emptyDir (the venvs and uv's cache): the kubelet evicts the worker pod once the "
         "volume holds more than its limit, while the cache is cleaned only when it grows past "
         "its budget, so the pod would be evicted before any cleanup. Set "
         "worker.cache.venvsBudget below worker.cache.venvsSizeLimit with room to spare (the "
         "defaults: 6Gi for the venvs and 2Gi for uv's cache, of 10Gi), or raise "
         "worker.cache.venvsSizeLimit."]),
    "venv budget equal to the limit in other units": (
        "worker: {cache: {venvsBudget: 10240Mi}}", (),
        ["worker.cache.venvsBudget=10240Mi (10737418240 bytes) is not below "
         "worker.cache.venvsSizeLimit=10Gi (10737418240 bytes)"]),
    "venv budget as a byte count equal to the limit": (
        "worker: {cache: {venvsBudget: '10737418240'}}", (),
        ["worker.cache.venvsBudget=10737418240 (10737418240 bytes) is not below "
         "worker.cache.venvsSizeLimit=10Gi"]),
    "venv budget in powers of 1000 above a limit in powers of 1024": (
        "worker: {cache: {venvsBudget: 11G, venvsSizeLimit: 10Gi}}", (),
        ["worker.cache.venvsBudget=11G (11000000000 bytes) is not below "
         "worker.cache.venvsSizeLimit=10Gi (10737418240 bytes)"]),
    "venv budget above a decimal limit": (
        "worker: {cache: {venvsBudget: 2Gi, venvsSizeLimit: 1.5Gi}}", (),
        ["worker.cache.venvsBudget=2Gi (2147483648 bytes) is not below "
         "worker.cache.venvsSizeLimit=1.5Gi (1610612736 bytes)"]),
    "uv cache budget alone equal to the venv volume's limit": (
        "worker: {cache: {venvsBudget: null, uvCacheBudget: 10Gi}}", (),
        ["worker.cache.uvCacheBudget=10Gi (10737418240 bytes) is not below "
         "worker.cache.venvsSizeLimit=10Gi (10737418240 bytes), the sizeLimit of the venv-cache "
         "emptyDir (the venvs and uv's cache)", "Set worker.cache.uvCacheBudget below "
         "worker.cache.venvsSizeLimit with room to spare"]),
    # both budgets of the venv volume: each cache may be full at once
    "venv and uv cache budgets together equal to the venv volume's limit": (
        "worker: {cache: {venvsBudget: 8Gi}}", (),
        ["worker.cache.venvsBudget=8Gi plus worker.cache.uvCacheBudget=2Gi (10737418240 bytes "
         "together) is not below worker.cache.venvsSizeLimit=10Gi (10737418240 bytes), the "
         "sizeLimit of the venv-cache emptyDir that holds both the venvs and uv's cache: each "
         "cache is cleaned only when it grows past its own budget, so both may be full at "
         "once, and the kubelet evicts the worker pod once the volume holds more than its "
         "limit. Lower worker.cache.venvsBudget or worker.cache.uvCacheBudget so that their sum "
         "is below worker.cache.venvsSizeLimit with room to spare (the defaults: 6Gi for the "
         "venvs and 2Gi for uv's cache, of 10Gi), or raise worker.cache.venvsSizeLimit."]),
    "venv and uv cache budgets in mixed units above the limit": (
        "worker: {cache: {venvsBudget: '4294967296', uvCacheBudget: 1.5G, "
        "venvsSizeLimit: 5.5G}}", (),
        ["worker.cache.venvsBudget=4294967296 plus worker.cache.uvCacheBudget=1.5G "
         "(5794967296 bytes together) is not below worker.cache.venvsSizeLimit=5.5G "
         "(5500000000 bytes)"]),
    "uv cache budget given with --set": (
        "", ("--set", "worker.cache.uvCacheBudget=5Gi"),
        ["worker.cache.venvsBudget=6Gi plus worker.cache.uvCacheBudget=5Gi (11811160064 bytes "
         "together) is not below worker.cache.venvsSizeLimit=10Gi"]),
    "uv cache budget in dask's GB spelling": (
        "worker: {cache: {uvCacheBudget: 2GB}}", (),
        not_memory("/worker/cache/uvCacheBudget", "2GB")),
    "uv cache budget zero": (
        "worker: {cache: {uvCacheBudget: 0Mi}}", (),
        not_memory("/worker/cache/uvCacheBudget", "0Mi")),
    "uv cache budget as a YAML number": (
        "worker: {cache: {uvCacheBudget: 2147483648}}", (),
        [SCHEMA, "at '/worker/cache/uvCacheBudget': got number, want null or string"]),
    "extraEnv sets the uv cache budget": (
        "worker: {extraEnv: [{name: MODELOPS_UV_CACHE_MAX_BYTES, value: 1Gi}]}", (),
        ["worker.extraEnv sets MODELOPS_UV_CACHE_MAX_BYTES, which the chart renders from "
         "worker.cache.uvCacheBudget. Remove it from worker.extraEnv and set "
         "worker.cache.uvCacheBudget in your values instead."]),
    "bundle budget equal to the bundle volume's limit": (
        "worker: {cache: {bundlesBudget: 2Gi}}", (),
        ["worker.cache.bundlesBudget=2Gi (2147483648 bytes) is not below "
         "worker.cache.bundlesSizeLimit=2Gi (2147483648 bytes), the sizeLimit of the "
         "bundle-cache emptyDir (the unpacked bundles)", "Set worker.cache.bundlesBudget below "
         "worker.cache.bundlesSizeLimit with room to spare (the defaults: 1536Mi of 2Gi), or "
         "raise worker.cache.bundlesSizeLimit."]),
    "bundle budget above a limit written as a YAML number": (
        "worker: {cache: {bundlesBudget: 1.5G, bundlesSizeLimit: 1000000000}}", (),
        ["worker.cache.bundlesBudget=1.5G (1500000000 bytes) is not below "
         "worker.cache.bundlesSizeLimit=1e+09 (1000000000 bytes)"]),
    "bundle budget above a limit in Kubernetes' milli-bytes": (
        "worker: {cache: {bundlesBudget: 3Gi, bundlesSizeLimit: 3000000000000m}}", (),
        ["worker.cache.bundlesBudget=3Gi (3221225472 bytes) is not below "
         "worker.cache.bundlesSizeLimit=3000000000000m (3000000000 bytes)"]),
    "budget given with --set": (
        "", ("--set", "worker.cache.bundlesBudget=4Gi"),
        ["worker.cache.bundlesBudget=4Gi (4294967296 bytes) is not below "
         "worker.cache.bundlesSizeLimit=2Gi"]),
    "budget in dask's GB spelling": (
        "worker: {cache: {venvsBudget: 6GB}}", (),
        not_memory("/worker/cache/venvsBudget", "6GB")),
    "budget zero": (
        "worker: {cache: {bundlesBudget: '0'}}", (),
        not_memory("/worker/cache/bundlesBudget", "0")),
    "bundle volume with a URL repository": (
        "bundles: {repo: 's3://b/bundles', volume: {persistentVolumeClaim: {claimName: x}}}", (),
        ['bundles.volume is set but bundles.repo="s3://b/bundles" is a URL, not an absolute '
         "path: the volume is mounted at bundles.repo"]),
    "bundle repository emptied": (
        "bundles: {repo: ''}", (),
        ["bundles.repo is not set: the workers need a bundle repository and the chart has no "
         "default", "bundles.repo: s3://bucket/prefix", "bundles.credentials.secretName",
         "bundles.volume: {persistentVolumeClaim: {claimName: <your claim>}}"]),
    "bundle repository path without a volume": (
        "bundles: {repo: /var/lib/modelops/bundle-repo}", (),
        ['bundles.repo="/var/lib/modelops/bundle-repo" is a path in the worker pods but '
         "bundles.volume is empty: nothing would put bundles there",
         "every task would fail with BundleNotFound",
         "Mount your repository there with bundles.volume",
         "or use an fsspec URL instead (s3://bucket/prefix; "
         "file:///var/lib/modelops/bundle-repo if your own image contains the repository)"]),
    "bundle credentials with a path repository": (
        "bundles: {repo: /var/lib/modelops/bundle-repo, volume: {persistentVolumeClaim: "
        "{claimName: x}}, credentials: {secretName: s3-creds, region: eu-west-1}}", (),
        ["bundles.credentials.secretName and bundles.credentials.region is set but "
         'bundles.repo="/var/lib/modelops/bundle-repo" is a path: credentials are for a URL '
         "repository"]),
    "bundle endpoint with a gs:// repository": (
        "bundles: {repo: 'gs://b/x', credentials: {endpoint: 'https://storage.googleapis.com'}}",
        (), ["bundles.credentials.endpoint and .region are for an s3:// repository",
             'but bundles.repo="gs://b/x"', "GCS through its S3 API"]),
    "worker.extraEnv shadowing the bundle endpoint": (
        "bundles: {repo: 's3://b/x', credentials: {endpoint: 'http://s3.storage:8333'}}\n"
        "worker: {extraEnv: [{name: AWS_ENDPOINT_URL, value: 'http://other:9000'}]}", (),
        ["worker.extraEnv sets AWS_ENDPOINT_URL, which the chart renders from "
         "bundles.credentials.endpoint"]),
    "bundle endpoint that is not an http(s) URL": (
        "bundles: {repo: 's3://b/x', credentials: {endpoint: 's3.storage:8333'}}", (),
        [SCHEMA, "at '/bundles/credentials/endpoint': 's3.storage:8333' does not match pattern"]),
    "bundle credentials Secret name with capitals": (
        "bundles: {repo: 's3://b/x', credentials: {secretName: S3Creds}}", (),
        [SCHEMA, "at '/bundles/credentials/secretName': 'S3Creds' does not match pattern"]),
    "bundle repository relative path": (
        "bundles: {repo: bundles/repo}", (),
        ['bundles.repo="bundles/repo" is neither an absolute path nor a URL']),
    "bundle volume that starts empty": (
        "bundles: {repo: /var/lib/modelops/bundle-repo, volume: {emptyDir: {}}}", (),
        ["bundles.volume is an emptyDir: it starts empty and is mounted read-only, so it never "
         "holds a bundle"]),
    "memory request above the memory limit": (
        "worker: {resources: {requests: {memory: 20Gi}, limits: {memory: 16Gi}}}", (),
        ["worker.resources.requests.memory=20Gi is larger than "
         "worker.resources.limits.memory=16Gi: Kubernetes refuses a request above its limit"]),
    "cpu request above the cpu limit (millicores)": (
        "worker: {resources: {requests: {cpu: 1500m}, limits: {cpu: 1.2}}}", (),
        ["worker.resources.requests.cpu=1500m is larger than worker.resources.limits.cpu=1.2: "
         "Kubernetes refuses a request above its limit"]),
    # What only the API server caught (tests/cluster/apiserver/test_refusals.py proves it)
    "scheduler memory request above its limit": (
        "scheduler: {resources: {requests: {memory: 2Gi}}}", (),
        ["scheduler.resources.requests.memory (2Gi) is above scheduler.resources.limits.memory "
         "(1Gi): Kubernetes refuses a container whose request exceeds its limit"]),
    "worker ephemeral-storage request above its limit": (
        "worker: {resources: {requests: {ephemeral-storage: 2Gi}, "
        "limits: {ephemeral-storage: 2G}}}", (),
        ["worker.resources.requests.ephemeral-storage (2Gi) is above "
         "worker.resources.limits.ephemeral-storage (2G)"]),
    "toleration Exists with a value": (
        "worker: {tolerations: [{key: dedicated, operator: Exists, value: sims}]}", (),
        ['worker.tolerations[0] has operator Exists and a value ("sims"): Exists matches every '
         "value of the key and Kubernetes refuses a value with it"]),
    "toleration field misspelt": (
        "scheduler: {tolerations: [{key: dedicated, operater: Exists}]}", (),
        [SCHEMA, "at '/scheduler/tolerations/0': additional properties 'operater' not allowed"]),
    "toleration seconds without NoExecute": (
        "worker: {tolerations: [{key: a, operator: Exists, tolerationSeconds: 60}]}", (),
        ["worker.tolerations[0] sets tolerationSeconds without effect NoExecute"]),
    "nodeSelector key with a space": (
        "worker: {nodeSelector: {'bad key': x}}", (),
        [SCHEMA, "at '/worker/nodeSelector': additional properties 'bad key' not allowed"]),
    "nodeSelector value too long": (
        "scheduler: {nodeSelector: {pool: " + "x" * 64 + "}}", (),
        [SCHEMA, "at '/scheduler/nodeSelector/pool': maxLength: got 64, want 63"]),
    "privilege escalation allowed": (
        "containerSecurityContext: {allowPrivilegeEscalation: true}", (),
        ["containerSecurityContext.allowPrivilegeEscalation=true: the scheduler pods would be "
         "refused by Pod Security"]),
    "privilege escalation allowed in the workers only": (
        "worker: {containerSecurityContext: {allowPrivilegeEscalation: true}}", (),
        ["containerSecurityContext.allowPrivilegeEscalation=true: the worker pods would be "
         "refused by Pod Security"]),
    "privileged container": (
        "scheduler: {containerSecurityContext: {privileged: true}}", (),
        ["containerSecurityContext.privileged=true: the scheduler pods would be refused by Pod "
         "Security"]),
    "PodMonitor without its CRD": (
        "metrics: {podMonitor: {enabled: true}}", (),
        ["metrics.podMonitor.enabled=true needs the PodMonitor CRD (monitoring.coreos.com/v1, "
         "from the Prometheus Operator), which this cluster does not serve",
         "pass --api-versions monitoring.coreos.com/v1/PodMonitor"]),
    "ServiceMonitor without its CRD": (
        "metrics: {serviceMonitor: {enabled: true}}", (),
        ["metrics.serviceMonitor.enabled=true needs the ServiceMonitor CRD"]),
    "kubernetes older than supported": (
        "", ("--kube-version", "1.28.0"),
        ["chart requires kubeVersion: >=1.29.0-0 which is incompatible with Kubernetes v1.28.0"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_values_are_refused_with_a_clear_message(helm, case):
    values, extra, fragments = CASES[case]
    out = render(helm, values=values or None, extra=extra)
    assert out.returncode != 0, f"{case}: helm accepted it:\n{out.stdout[:2000]}"
    assert "kind:" not in out.stdout, f"{case}: objects were rendered before the refusal"
    for fragment in fragments:
        assert fragment in out.stderr, f"{case}: {fragment!r} not in:\n{out.stderr}"


def test_at_least_twelve_cases():
    assert len(CASES) >= 12


@pytest.mark.parametrize("preset", [None, "prod-warm", "debug-isolated"])
def test_an_install_without_a_bundle_repository_is_refused(helm, preset):
    """`helm install` with the chart's defaults (and a preset, which sets only mode keys)
    refuses at once instead of starting workers whose every task fails."""
    out = render(helm, *([preset] if preset else []), mine=False)
    assert out.returncode != 0 and "kind:" not in out.stdout
    assert "bundles.repo is not set" in out.stderr
    assert "Set it in your values file to either an fsspec URL" in out.stderr


@pytest.mark.parametrize("values", [
    "bundles: {repo: 'file:///opt/bundle-repo'}",
    "bundles: {repo: 's3://b/x', credentials: {secretName: s3-creds, endpoint: "
    "'http://seaweedfs-s3.storage.svc:8333/', region: us-east-1}}",
    "bundles: {repo: 'gs://b/x', credentials: {secretName: gcs-key}}",
    "bundles: {repo: /mnt/repo, volume: {persistentVolumeClaim: {claimName: bundles}}}",
    "worker: {resources: {requests: {memory: 16Gi, cpu: 500m}, limits: {memory: 16Gi, cpu: 0.5}}}",
    "podSecurityContext: {runAsUser: 0, runAsNonRoot: false}",
    "worker: {strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}}",
    "worker: {strategy: {type: RollingUpdate}}",
    "scheduler: {service: {type: LoadBalancer, loadBalancerIP: 10.0.0.1, "
    "loadBalancerSourceRanges: [10.0.0.0/8, '2001:db8::/32']}}",
    "serviceAccount: {create: true, annotations: {a: b}}",
    "worker: {livenessProbe: {successThreshold: 1}, memoryPerProcess: '1073741824'}",
    "scheduler: {ingress: {enabled: true, hosts: ['*.dask.example.com', dask-1.internal]}}",
    "worker: {topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: "
    "DoNotSchedule}, {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}]}",
    "worker: {tolerations: [{operator: Exists}, {key: a, operator: Exists, effect: NoExecute, "
    "tolerationSeconds: 30}], nodeSelector: {node.kubernetes.io/instance-type: m5.large, "
    "empty: ''}}",
    "scheduler: {resources: {requests: {memory: 1Gi, ephemeral-storage: 1G}, "
    "limits: {memory: 1024Mi, ephemeral-storage: 1Gi}}}",
    "containerSecurityContext: {privileged: false}",
    # cache budgets just below their emptyDir's sizeLimit, in mixed units; none with null;
    # a venv cache on a claim (its size is not the chart's) and a sizeLimit of 0 (no limit
    # to the kubelet) are not compared
    "worker: {cache: {venvsBudget: 10239Mi, uvCacheBudget: null, bundlesBudget: '2147483647'}}",
    "worker: {cache: {venvsBudget: 9.99Gi, uvCacheBudget: null, venvsSizeLimit: 10Gi, "
    "bundlesBudget: 1G, "
    "bundlesSizeLimit: 1000000001}}",
    "worker: {cache: {venvsBudget: null, uvCacheBudget: null, bundlesBudget: null, "
    "venvsSizeLimit: 1Mi, bundlesSizeLimit: 1Mi}}",
    "worker: {cache: {venvsBudget: 100Gi, venvsExistingClaim: venvs}}",
    # venvsBudget + uvCacheBudget just below the venv volume's limit, in mixed units; a uv
    # cache budget alone (the venvs' off), or on a claim, or with no sizeLimit
    "worker: {cache: {venvsBudget: 8191Mi}}",
    "worker: {cache: {venvsBudget: '8589934592', uvCacheBudget: '2147483647'}}",
    "worker: {cache: {venvsBudget: '4294967296', uvCacheBudget: 1.5G, venvsSizeLimit: 5.4Gi}}",
    "worker: {cache: {venvsBudget: null, uvCacheBudget: 10239Mi}}",
    "worker: {cache: {venvsBudget: 6Gi, uvCacheBudget: 100Gi, venvsExistingClaim: venvs}}",
    "worker: {cache: {uvCacheBudget: 100Gi, venvsSizeLimit: 0}}",
    "worker: {cache: {uvCacheBudget: null, venvsBudget: 9Gi}}",
    "worker: {cache: {venvsBudget: 100Gi, venvsSizeLimit: 0}}",
    "worker: {extraVolumes: [{name: a, emptyDir: {}}], "
    "extraVolumeMounts: [{name: a, mountPath: /var/cache/modelops/other}, "
    "{name: venv-cache, mountPath: /opt/venvs, subPath: venvs}]}",
])
def test_the_nearest_good_values_render(helm, values):
    """The boundary of each refusal: a repository built into the image (file://), a path
    with a volume, requests equal to their limits, root when runAsNonRoot is off, a rolling
    update that may remove one pod, LoadBalancer fields on a LoadBalancer, annotations on a
    created account, a plain byte count, a second mount of a chart volume elsewhere."""
    assert render(helm, values=values).returncode == 0


# ---- every mistake in one run -------------------------------------------------------------
# helm checks values in two phases: values.schema.json first (every field alone), and only
# when it passes the templates (_validate*.tpl: combinations). Each phase lists every
# problem it finds; a schema problem stops helm before the templates run.

THREE_SCHEMA_MISTAKES = """
worker: {processes: 0, logLevel: verbose, memoryPerProcess: 2GB}
"""
THREE_TEMPLATE_MISTAKES = """
worker:
  extraArgs: ['--nthreads', '8']
  executor: {type: direct, forceFreshVenv: true}
serviceAccount: {annotations: {eks.amazonaws.com/role-arn: x}}
"""


def test_three_schema_mistakes_are_all_reported_in_one_run(helm):
    out = render(helm, values=THREE_SCHEMA_MISTAKES)
    assert out.returncode != 0 and "kind:" not in out.stdout
    for fragment in [SCHEMA, "at '/worker/processes'", "minimum: got 0, want 1",
                     "at '/worker/logLevel': value must be one of",
                     f"at '/worker/memoryPerProcess': '2GB' {NOT_MEMORY}"]:
        assert fragment in out.stderr, f"{fragment!r} not in:\n{out.stderr}"


def test_three_template_mistakes_are_all_reported_in_one_run(helm):
    """Each message is one numbered line, saying what to do; helm names the values check
    (templates/values/check.yaml), not an object, as where the render stopped."""
    out = render(helm, values=THREE_TEMPLATE_MISTAKES)
    assert out.returncode != 0 and "kind:" not in out.stdout
    assert "modelops-dask/templates/values/check.yaml" in out.stderr, out.stderr
    assert ("the values have 3 problems; fix all of them (each says how), then run again:\n"
            "1. worker.extraArgs contains --nthreads, which the chart renders from "
            "worker.threads. Remove it from worker.extraArgs and set worker.threads instead.\n"
            "2. worker.executor.forceFreshVenv=true needs worker.executor.type=isolated_warm"
            ) in out.stderr, out.stderr
    assert "\n3. serviceAccount.annotations are set but serviceAccount.create=false" in out.stderr


def test_a_schema_mistake_hides_the_template_mistakes_until_fixed(helm):
    """What a user sees with both kinds: the schema's list first (the templates never ran);
    once it is fixed, the templates' list."""
    both = THREE_TEMPLATE_MISTAKES + "mode: fast\n"
    out = render(helm, values=both)
    assert SCHEMA in out.stderr and "at '/mode'" in out.stderr
    assert "problems" not in out.stderr and "extraArgs" not in out.stderr
    fixed = render(helm, values=THREE_TEMPLATE_MISTAKES + "mode: prod-warm\n")
    assert SCHEMA not in fixed.stderr and "the values have 3 problems" in fixed.stderr


def test_an_unset_mode_is_reported_with_the_other_mistakes(helm):
    """A null mode never reaches the schema (helm drops null keys): the templates report it
    together with every check that does not need the mode."""
    out = render(helm, values="mode: null\nworker: {strategy: {type: Recreate, "
                              "rollingUpdate: {maxSurge: 1}}}")
    assert "the values have 2 problems" in out.stderr, out.stderr
    assert "1. mode is not set" in out.stderr and "2. worker.strategy.rollingUpdate" in out.stderr


def test_one_mistake_is_reported_without_a_list(helm):
    out = render(helm, values="serviceAccount: {annotations: {a: b}}")
    assert "problems" not in out.stderr and "1. " not in out.stderr
    assert "): serviceAccount.annotations are set but" in out.stderr, out.stderr
