"""``gpu-sc info``: versions, and which backends are usable here (and if not, why)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="versions and usable backends")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..dispatch import cuda_status, implemented_steps, resolve_backend
    from ..dispatch.provenance import environment

    env = environment("cupy")
    for name, version in env["versions"].items():
        print(f"{name:10s} {version}")
    status = cuda_status()
    print()
    print("scanpy     usable (reference CPU path)")
    print(
        f"numpy      usable (engine on CPU; steps: {', '.join(implemented_steps('numpy')) or 'none'})"
    )
    print(f"cupy       {'usable' if status.available else 'not usable'}: {status.reason}")
    backend, why = resolve_backend("auto")
    print(f"\nauto -> {backend} ({why})")
    return 0
