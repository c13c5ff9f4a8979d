#!/usr/bin/env python3
"""Copies an eam-proxy configuration for `eam-proxy --check` on this machine.

`--check` requires the files a configuration names (tls_cert, tls_key, upstream.ca_file) to
exist. Those paths belong to the target machine or pod (/etc/eam-proxy/tls/...), so each is
created, empty, under ROOT and the copy names ROOT/<path> instead. Nothing else changes.

    stage_config.py ROOT IN.toml OUT.toml
"""

import os
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib


def main():
    root, source, target = sys.argv[1:4]
    with open(source, encoding="utf-8") as f:
        text = f.read()
    config = tomllib.loads(text)
    server, upstream = config.get("server", {}), config.get("upstream", {})
    paths = []
    if server.get("tls_listen"):
        paths += [server.get("tls_cert"), server.get("tls_key")]
    paths.append(upstream.get("ca_file"))
    for path in filter(None, paths):
        staged = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        open(staged, "a", encoding="utf-8").close()
        text = text.replace(f'"{path}"', f'"{staged}"')
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
