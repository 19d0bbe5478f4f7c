#!/usr/bin/env python3
"""Vendors the schemas the mesh manifests are validated against, descriptions removed.

Usage:
  vendor.py ISTIO_CRDS_YAML EG_CRDS_DIR GATEWAY_API_CRDS_YAML
    (istio/istio manifests/charts/base/files/crd-all.gen.yaml;
    envoyproxy/gateway charts/gateway-helm/charts/crds/crds/generated/;
    envoyproxy/gateway charts/gateway-helm/charts/crds/crds/gatewayapi-crds.yaml)
    writes tests/schemas/<group>/<Kind>.<version>.json (a CRD's openAPIV3Schema). Needs PyYAML.
  vendor.py kubernetes KUBERNETES_VALIDATE_WHEEL
    (PyPI kubernetes-validate 1.37.0) writes tests/schemas/kubernetes-1.37.0/<name>.json:
    its v1.37.0-local-strict schema of each core kind, with the definitions it uses inlined.
Keys sorted, compact.
"""
import json
import os
import re
import sys
import zipfile

import yaml

WANTED = {
    ("extensions.istio.io", "WasmPlugin", "v1alpha1"),
    ("networking.istio.io", "EnvoyFilter", "v1alpha3"),
    ("networking.istio.io", "DestinationRule", "v1"),
    ("gateway.envoyproxy.io", "EnvoyExtensionPolicy", "v1alpha1"),
    ("gateway.envoyproxy.io", "EnvoyPatchPolicy", "v1alpha1"),
    ("gateway.envoyproxy.io", "EnvoyProxy", "v1alpha1"),
    ("gateway.envoyproxy.io", "ClientTrafficPolicy", "v1alpha1"),
    ("gateway.networking.k8s.io", "Gateway", "v1"),
    ("gateway.networking.k8s.io", "HTTPRoute", "v1"),
}


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def crds(path):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                yield doc


KUBERNETES = "1.37.0"
KUBERNETES_KINDS = [
    "configmap-v1",
    "deployment-apps-v1",
    "namespace-v1",
    "networkpolicy-networking-v1",
    "poddisruptionbudget-policy-v1",
    "service-v1",
]
REF = "/api/_definitions.json#/$defs/"


def kubernetes(wheel):
    base = f"kubernetes_validate/kubernetes-json-schema/v{KUBERNETES}-local-strict/"
    with zipfile.ZipFile(wheel) as z:
        defs = json.loads(z.read(base + "_definitions.json"))["$defs"]
        here = os.path.dirname(os.path.abspath(__file__))
        for name in KUBERNETES_KINDS:
            schema = strip(json.loads(z.read(base + name + ".json")))
            used, todo = {}, [schema]
            while todo:
                # Refs from the kind's file name the definitions file; between
                # definitions they are local.
                for ref in re.findall(r'"\$ref": "(?:/api/_definitions\.json)?#/\$defs/([^"]+)"',
                                      json.dumps(todo.pop())):
                    if ref not in used:
                        used[ref] = strip(defs[ref])
                        todo.append(used[ref])
            schema["$defs"] = used
            text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
            text = text.replace(REF, "#/$defs/")
            out = os.path.join(here, f"kubernetes-{KUBERNETES}", name + ".json")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w") as f:
                f.write(text + "\n")
            print(out, os.path.getsize(out))


def main():
    if sys.argv[1] == "kubernetes":
        return kubernetes(sys.argv[2])
    istio, eg_dir, gateway_api = sys.argv[1:4]
    paths = [istio, gateway_api] + [
        os.path.join(eg_dir, n) for n in sorted(os.listdir(eg_dir)) if n.endswith(".yaml")
    ]
    here = os.path.dirname(os.path.abspath(__file__))
    for path in paths:
        for crd in crds(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if (group, kind, version["name"]) not in WANTED:
                    continue
                out = os.path.join(here, group, f"{kind}.{version['name']}.json")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "w") as f:
                    json.dump(strip(version["schema"]["openAPIV3Schema"]), f,
                              sort_keys=True, separators=(",", ":"))
                    f.write("\n")
                print(out, os.path.getsize(out))


if __name__ == "__main__":
    main()
