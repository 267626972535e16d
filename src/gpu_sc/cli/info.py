"""``gpu-sc info``: versions, and which backends are usable here (and if not, why)."""

from __future__ import annotations

from ..backends import registered, resolve_backend


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="versions and usable backends")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..dispatch import implemented_steps
    from ..dispatch.provenance import environment

    env = environment("cupy")
    for name, version in env["versions"].items():
        print(f"{name:10s} {version}")
    print()
    for backend in registered():  # every registered backend, and whether it runs here
        print(f"{backend.name:10s} {_usable(backend, implemented_steps)}")
    backend, why = resolve_backend("auto")
    print(f"\nauto -> {backend} ({why})")
    return 0


def _usable(backend, implemented_steps) -> str:
    ok, reason = backend.available()
    if not ok:
        return f"not usable: {reason}"
    if backend.delegates:
        return "usable (reference CPU path)"
    if backend.is_gpu:
        return f"usable: {reason}"
    return f"usable (engine on CPU; steps: {', '.join(implemented_steps(backend)) or 'none'})"
