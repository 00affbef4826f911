"""Offline checks of the deployment files: ``make deploy-check``.

1. obtain helm/kubectl and kubernetes-validate (``servers.k8s_tools`` in tests/, no Docker);
2. ``helm lint --strict`` on the chart (defaults and every example values file);
3. ``helm template`` for the defaults and each example; kubernetes-validate --strict against
   Kubernetes 1.33 on every rendered manifest; the defaults go to build/k8s/rendered.yaml and
   each example to build/k8s/<example>.yaml;
4. ``promtool check rules`` and ``promtool test rules`` on deploy/prometheus;
5. pytest on tests/deploy (rendered-object checks, dashboard queries).

Exits non-zero at the first failing step and says which. Run from the checkout with the
tests directory on the path, as the Makefile does: ``PYTHONPATH=tests python
scripts/deploy_check.py [--root DIR]`` (the checkout: the working directory by default).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from servers.k8s_tools import KUBERNETES_VERSION, ensure_helm, ensure_kubernetes_validate


def step(name: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(argv, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]
    took = time.monotonic() - started
    if result.returncode != 0:
        print(f"FAIL  {name} ({took:.1f}s)\n{result.stdout}\n{result.stderr}", file=sys.stderr)
        raise SystemExit(1)
    print(f"ok    {name} ({took:.1f}s)")
    return result  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="The FLTS checkout.")
    root: Path = parser.parse_args().root.resolve()
    chart = root / "deploy" / "helm" / "flts"
    examples = sorted((chart / "examples").glob("*.yaml"))
    out = root / "build" / "k8s"
    prometheus = root / "deploy" / "prometheus"
    helm = str(ensure_helm(root))
    validate = str(ensure_kubernetes_validate(root))
    out.mkdir(parents=True, exist_ok=True)

    step("helm lint --strict (defaults)", [helm, "lint", "--strict", str(chart)])
    for example in examples:
        step(
            f"helm lint --strict ({example.name})",
            [helm, "lint", "--strict", str(chart), "-f", str(example)],
        )

    renders: dict[str, list[str]] = {"rendered": []} | {e.stem: ["-f", str(e)] for e in examples}
    for name, extra in renders.items():
        result = step(
            f"helm template ({name})",
            [helm, "template", "flts", str(chart), "--namespace", "flts", *extra],
        )
        path = out / f"{name}.yaml"
        path.write_text(result.stdout)
        step(
            f"kubernetes-validate --strict {KUBERNETES_VERSION} ({path.relative_to(root)})",
            [validate, "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path)],
        )

    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    rules = sorted(str(p) for p in (prometheus / "rules").glob("*.yml"))
    tests = sorted(str(p) for p in (prometheus / "tests").glob("*.yml"))
    step("promtool check rules", [promtool, "check", "rules", *rules])
    step("promtool test rules", [promtool, "test", "rules", *tests])
    # Only the compose config: Debian's promtool is built without kubernetes_sd, so it cannot
    # parse kubernetes.yml (tests/deploy checks that one's structure instead).
    compose = prometheus / "compose.yml"
    step("promtool check config (compose)", [promtool, "check", "config", str(compose)])

    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/deploy"]
    print(step("pytest tests/deploy", pytest, cwd=root).stdout.strip().splitlines()[-1])
    print(f"rendered default manifests: {(out / 'rendered.yaml').relative_to(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
