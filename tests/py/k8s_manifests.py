"""Checks deploy/kubernetes/ offline and prints what the image test needs.

Usage: k8s_manifests.py DEPLOY_DIR
  * every Kubernetes object validates, in strict mode (unknown fields are
    errors), against Kubernetes' own OpenAPI schemas of the oldest and newest
    versions we support (kubernetes-validate ships them);
  * the ServiceMonitor validates against the Prometheus Operator's CRD
    (the models cloudcoil generates from it): strict by a round trip, since
    those models ignore unknown fields instead of refusing them;
  * the kustomization lists every manifest and the DaemonSet's image;
  * the pod annotations are what deploy/prometheus/scrape-kubernetes.yml keeps;
  * the TLS overlay (deploy/kubernetes-tls) applied to them as kustomize
    applies it (a strategic merge for the DaemonSet, a JSON patch for the
    ServiceMonitor) validates too, serves the mounted web config, probes over
    HTTPS and scrapes over HTTPS with the CA and basic auth from a Secret.
Prints "ok <JSON>": the DaemonSet's container args, added capabilities,
probe paths, node selector, and the versions checked.
"""
import json
import pathlib
import sys

import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

# appArmorProfile is a field from 1.30 on; 1.37 is the newest schema shipped.
VERSIONS = ["1.30.0", "1.37.0"]


# Lists that a strategic merge merges by a key (as Kubernetes' schemas say);
# other lists are replaced.
MERGE_KEYS = {"containers": "name", "volumes": "name", "volumeMounts": "mountPath", "env": "name"}


def strategic_merge(base, patch, field=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else v
        return out
    key = MERGE_KEYS.get(field)
    if key and isinstance(base, list) and isinstance(patch, list):
        out = list(base)
        for item in patch:
            at = [i for i, b in enumerate(out) if b[key] == item[key]]
            if at:
                out[at[0]] = strategic_merge(out[at[0]], item)
            else:
                # kustomize puts new items of a merged list first.
                out.insert(0, item)
        return out
    return patch


def json_patch(doc, ops):
    doc = json.loads(json.dumps(doc))
    for op in ops:
        if op["op"] != "add":
            sys.exit(f"JSON patch op {op['op']}: only add is checked here")
        *parents, last = op["path"].strip("/").split("/")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = op["value"]
    return doc


def validate(name, doc):
    if doc["kind"] == "ServiceMonitor":
        model = monitoring.ServiceMonitor.model_validate(doc)
        back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        if back != doc:
            sys.exit(f"{name}: fields the ServiceMonitor CRD does not have: {doc} != {back}")
        return
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            sys.exit(f"{name} ({doc['kind']}) against Kubernetes {version}: {e.message} at {list(e.path)}")


def tls_overlay(deploy, objects):
    """The base with deploy/kubernetes-tls's patches, validated and checked."""
    overlay = deploy / "kubernetes-tls"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    if kustomization["resources"] != ["../kubernetes"]:
        sys.exit(f"kubernetes-tls/kustomization.yaml: resources {kustomization['resources']}")
    patched = {}
    for patch in kustomization["patches"]:
        text = yaml.safe_load((overlay / patch["path"]).read_text())
        if "target" in patch:
            kind = patch["target"]["kind"]
            patched[kind] = json_patch(objects[kind][1], text)
        else:
            kind = text["kind"]
            patched[kind] = strategic_merge(objects[kind][1], text)
    for kind, doc in sorted(patched.items()):
        validate(f"kubernetes-tls ({kind})", doc)
    pod = patched["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    config = args[args.index("--web-config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    (volume,) = [n for n, path in mounts.items() if config.startswith(path + "/")]
    schemes = {container[p]["httpGet"].get("scheme") for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    (endpoint,) = patched["ServiceMonitor"]["spec"]["endpoints"]
    if endpoint["scheme"] != "https" or schemes != {"HTTPS"}:
        sys.exit(f"kubernetes-tls: the scrape is {endpoint['scheme']}, the probes {schemes}")
    scrape_secret = {endpoint["tlsConfig"]["ca"]["secret"]["name"], endpoint["basicAuth"]["username"]["name"],
                     endpoint["basicAuth"]["password"]["name"]}
    base_endpoint = objects["ServiceMonitor"][1]["spec"]["endpoints"][0]
    if endpoint["relabelings"] != base_endpoint["relabelings"]:
        sys.exit("kubernetes-tls: the ServiceMonitor lost the base's relabelings")
    return {"web_config": config, "web_secret": secrets[volume], "scrape_secrets": sorted(scrape_secret),
            "server_name": endpoint["tlsConfig"]["serverName"]}


def main():
    deploy = pathlib.Path(sys.argv[1])
    k8s = deploy / "kubernetes"
    objects = {}
    for path in sorted(k8s.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            objects[doc["kind"]] = (path.name, doc)
            validate(path.name, doc)

    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    present = sorted(name for name, _ in objects.values())
    if listed != present:
        sys.exit(f"kustomization.yaml lists {listed}, the folder has {present}")

    _, ds = objects["DaemonSet"]
    pod = ds["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    image = container["image"].rsplit(":", 1)
    if [kustomization["images"][0]["name"], kustomization["images"][0]["newTag"]] != image:
        sys.exit(f"kustomization.yaml's image differs from the DaemonSet's {container['image']}")
    annotations = pod["metadata"]["annotations"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(port):
        sys.exit(f"prometheus.io annotations {annotations} do not announce port {port}")
    scrape = yaml.safe_load((deploy / "prometheus" / "scrape-kubernetes.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    keep = jobs["pywats-agent-pods"]["relabel_configs"][0]
    if keep["source_labels"] != ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] or keep["regex"] != "true":
        sys.exit("scrape-kubernetes.yml's pod job does not keep the annotated pods")
    _, service = objects["Service"]
    _, monitor = objects["ServiceMonitor"]
    if not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items():
        sys.exit("the ServiceMonitor does not select the Service")
    if not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items():
        sys.exit("the Service does not select the DaemonSet's pods")

    security = container["securityContext"]
    print("ok " + json.dumps({
        "tls": tls_overlay(deploy, objects),
        "node_selector": pod["spec"]["nodeSelector"],
        "node_arches": [
            e["values"]
            for t in pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"
            ]
            for e in t["matchExpressions"]
            if e["key"] == "kubernetes.io/arch" and e["operator"] == "In"
        ],
        "versions": VERSIONS,
        "kinds": sorted(objects),
        "args": container["args"],
        "host_pid": pod["spec"].get("hostPID", False),
        "privileged": security.get("privileged", False),
        "drop": security["capabilities"]["drop"],
        "seccomp": security["seccompProfile"]["type"],
        "add": security["capabilities"]["add"],
        "liveness": container["livenessProbe"]["httpGet"]["path"],
        "readiness": container["readinessProbe"]["httpGet"]["path"],
        "mounts": [(m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]],
        "memory_limit": container["resources"]["limits"]["memory"],
    }))


if __name__ == "__main__":
    main()
