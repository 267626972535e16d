"""Compile every registered fused kernel to PTX: ``python -m gpu_sc.kernels.cuda.compile``.

Runs without a GPU (numba-cuda's ``compile_ptx`` with the NVRTC/NVVM wheels), and must run
without the simulator (``NUMBA_ENABLE_CUDASIM`` unset or 0). Prints one line per kernel,
signature and architecture, and exits 1 when any fails (the ``ptx`` tests run it)::

    python -m gpu_sc.kernels.cuda.compile --cc 80,90 [--json out.json] [--kernel NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ._registry import registry


def compile_all(ccs: list[tuple[int, int]], only: list[str] | None = None) -> list[dict]:
    """One record per (kernel, function, signature, cc): ``ok``, PTX bytes or the error."""
    from numba import cuda

    out = []
    for name, spec in registry().items():
        if only and name not in only:
            continue
        try:
            funcs = spec.kernels()
        except Exception as exc:
            out.append(
                {
                    "kernel": name,
                    "function": "*",
                    "signature": "*",
                    "cc": "*",
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
            continue
        for fname, sigs in spec.signatures.items():
            py_func = getattr(funcs[fname], "py_func", funcs[fname])
            for sig in sigs:
                for cc in ccs:
                    rec = {
                        "kernel": name,
                        "function": fname,
                        "signature": sig,
                        "cc": f"sm_{cc[0]}{cc[1]}",
                    }
                    t0 = time.perf_counter()
                    try:
                        ptx, _ = cuda.compile_ptx(py_func, sig, cc=cc)
                        rec.update(ok=True, ptx_bytes=len(ptx), has_entry=".entry" in ptx)
                        rec["ok"] = rec["has_entry"]
                    except Exception as exc:
                        rec.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
                    rec["seconds"] = round(time.perf_counter() - t0, 3)
                    out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cc", default="80,90", help="architectures, e.g. 80,90")
    p.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("compile: NUMBA_ENABLE_CUDASIM is on; PTX needs the real target", file=sys.stderr)
        return 2
    ccs = [(int(c) // 10, int(c) % 10) for c in args.cc.split(",")]
    records = compile_all(ccs, args.kernel)
    for r in records:
        status = "ok  " if r["ok"] else "FAIL"
        detail = f"{r.get('ptx_bytes', 0)} B PTX" if r["ok"] else r.get("error", "")
        print(f"{status} {r['kernel']}.{r['function']} [{r['signature']}] {r['cc']}: {detail}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
    failed = [r for r in records if not r["ok"]]
    print(
        f"compile: {len(records) - len(failed)} of {len(records)} compiled"
        + (f", {len(failed)} FAILED" if failed else "")
    )
    return 1 if failed or not records else 0


if __name__ == "__main__":
    sys.exit(main())
