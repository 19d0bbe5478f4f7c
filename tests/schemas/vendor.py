#!/usr/bin/env python3
"""Vendors the openAPIV3Schema of the CRDs the mesh manifests use, descriptions removed.

Usage: vendor.py ISTIO_CRDS_YAML EG_CRDS_DIR GATEWAY_API_CRDS_YAML
(istio/istio manifests/charts/base/files/crd-all.gen.yaml;
envoyproxy/gateway charts/gateway-helm/charts/crds/crds/generated/;
envoyproxy/gateway charts/gateway-helm/charts/crds/crds/gatewayapi-crds.yaml).
Writes tests/schemas/<group>/<Kind>.<version>.json, keys sorted. Needs PyYAML.
"""
import json
import os
import sys

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


def main():
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
