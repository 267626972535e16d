"""scanpy's own test suite as a conformance check for gpu_sc (driven by
``scripts/test_scanpy_suite.sh``, which runs this with the suite's virtual environment).

``prepare`` fetches the sdist of the *installed* scanpy from the package index (it holds
``tests/`` and ``src/testing``) into a cache folder outside the repository and rebuilds the
data its tests download (pbmc3k, from ``../shared/data/pbmc3k`` or ``$GPU_SC_DATA``);
``run MODE`` runs the relevant test files in one mode (``scanpy``: unmodified; ``gpu_sc``:
each scanpy pp/tl function gpu_sc implements replaced by gpu_sc's on the NumPy engine;
``strict``: the same with ``GPU_SC_STRICT=1``); ``report`` compares the modes' JUnit XML and
writes the per-file table, the per-test JSON and the regressions (passed unmodified, failed
substituted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODES = ("scanpy", "gpu_sc", "strict")
#: scanpy's test files for what gpu_sc implements (normalization, preprocessing, QC, HVG,
#: scaling, PCA, neighbors, clustering, embedding, PAGA, rank_genes_groups, score_genes).
TEST_FILES = (
    "test_normalization.py",
    "test_preprocessing.py",
    "test_qc_metrics.py",
    "test_highly_variable_genes.py",
    "test_scaling.py",
    "test_pca.py",
    "test_neighbors.py",
    "test_neighbors_common.py",
    "test_neighbors_key_added.py",
    "test_clustering.py",
    "test_embedding.py",
    "test_paga.py",
    "test_rank_genes_groups.py",
    "test_rank_genes_groups_logreg.py",
    "test_filter_rank_genes_groups.py",
    "test_score_genes.py",
)


def cache_dir() -> Path:
    return Path(os.environ.get("SCANPY_SUITE_DIR", "/tmp/gpu_sc-scanpy-suite"))


def sdist_dir() -> Path:
    return cache_dir() / f"scanpy-{version('scanpy')}"


def prepare() -> None:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    ver = version("scanpy")
    src = sdist_dir()
    if not (src / "tests").is_dir():
        archive = cache / f"scanpy-{ver}.tar.gz"
        if not archive.is_file():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-binary",
                    ":all:",
                    "--no-deps",
                    f"scanpy=={ver}",
                    "-d",
                    str(cache),
                ],
                check=True,
            )
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    # scanpy's pytest plugin lives in src/testing; only that goes on the path (src/scanpy
    # would shadow the installed scanpy that gpu_sc was installed against).
    link = cache / "pypath" / "testing"
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(src / "src" / "testing")
    # scanpy's fixture sets settings.datasetdir to the pytest cache's "scanpy-data" folder.
    datadir = src / ".pytest_cache" / "d" / "scanpy-data"
    datadir.mkdir(parents=True, exist_ok=True)
    target = datadir / "pbmc3k_raw.h5ad"
    if not target.is_file():
        build_pbmc3k(target)


def build_pbmc3k(target: Path) -> None:
    """``sc.datasets.pbmc3k()``'s file, made the way its docstring says, from the 10x files."""
    import scanpy as sc

    roots = [Path(os.environ["GPU_SC_DATA"])] if os.environ.get("GPU_SC_DATA") else []
    roots += [REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data"]
    for root in roots:
        for mtx in (
            root / "pbmc3k" / "filtered_gene_bc_matrices" / "hg19",
            root / "filtered_gene_bc_matrices" / "hg19",
        ):
            if (mtx / "matrix.mtx").is_file() or (mtx / "matrix.mtx.gz").is_file():
                adata = sc.read_10x_mtx(mtx, var_names="gene_symbols")
                adata.var_names_make_unique()
                adata.write(target, compression="gzip")
                print(f"rebuilt {target} from {mtx}")
                return
    print("pbmc3k not found (set GPU_SC_DATA): tests that need it are skipped", file=sys.stderr)


def run(
    mode: str,
    results: Path,
    extra: list[str],
    files=TEST_FILES,
    part: str = "",
    ids: list[str] | None = None,
) -> int:
    """One mode's pytest run; ``part`` (e.g. ``.part2``, with a subset of ``files``) names
    the outputs of a run split over several processes (the report merges them); ``ids``
    (test ids, instead of ``files``) reruns only those tests (``part`` ``.rerun``: the report
    lets their outcomes replace the earlier ones)."""
    results.mkdir(parents=True, exist_ok=True)
    src = sdist_dir()
    env = dict(os.environ)
    # $GPU_SC_SUITE_SRC: another gpu_sc source tree (e.g. an older commit) than the venv's
    first = [os.environ["GPU_SC_SUITE_SRC"]] if os.environ.get("GPU_SC_SUITE_SRC") else []
    env["PYTHONPATH"] = os.pathsep.join([*first, str(cache_dir() / "pypath"), str(HERE)])
    env["GPU_SC_SUITE_MODE"] = mode
    env.pop("GPU_SC_STRICT", None)
    if mode == "strict":
        env["GPU_SC_STRICT"] = "1"
    name = f"{mode}{part}"
    xml = results / f"{name}.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "gpu_sc_substitute",
        "-p",
        "no:randomly",
        "-v",
        "-rfE",
        "--tb=line",
        f"--junitxml={xml}",
        *(ids if ids else [f"tests/{f}" for f in files]),
        *extra,
    ]
    start = time.perf_counter()
    with open(results / f"{name}.log", "w") as log:
        rc = subprocess.run(cmd, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    (results / f"{name}.time").write_text(f"{seconds:.0f}\n")
    src_tree = Path(first[0]) if first else REPO
    head = subprocess.run(
        ["git", "-C", str(src_tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    (results / f"{name}.commit").write_text(f"{head or 'unknown'}\n")
    print(f"mode {name}: pytest exit {rc}, {seconds:.0f} s, log {results / f'{name}.log'}")
    return rc


def outcomes(xml: Path) -> dict[str, tuple[str, str]]:
    """``{test id: (outcome, first line of the message)}``; outcome pass, fail, skip or xfail."""
    rank = {"pass": 0, "skip": 1, "xfail": 1, "fail": 2}
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        file = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        parts = case.get("classname", "").split(".")
        cls = parts[-1] if parts and parts[-1] != Path(file).stem else ""
        tid = "::".join(p for p in (file, cls, case.get("name", "")) if p)
        outcome, msg = "pass", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "fail"
                msg = (child.get("message") or child.text or "").strip()
            elif child.tag == "skipped" and outcome == "pass":
                outcome = "xfail" if child.get("type") == "pytest.xfail" else "skip"
                msg = (child.get("message") or "").strip()
        lines = [line.strip() for line in msg.splitlines() if line.strip()]
        # a bare "AssertionError:" says nothing: the next lines (numpy's mismatch) do
        msg = " / ".join(lines[:3] if lines and lines[0].endswith(":") else lines[:1])[:300]
        if tid not in out or rank[outcome] > rank[out[tid][0]]:
            out[tid] = (outcome, msg)
    return out


def parts(results: Path, mode: str) -> list[str]:
    """The names of a mode's runs: ``mode`` and its ``mode.partN`` pieces."""
    names = {p.stem for p in results.glob(f"{mode}*") if p.suffix in (".xml", ".log")}
    # a rerun of some test ids (``mode.rerun``) comes last: its outcomes replace the earlier
    picked = sorted(n for n in names if n == mode or n.startswith(f"{mode}.part"))
    return picked + sorted(n for n in names if n.startswith(f"{mode}.rerun"))


def suite_seconds(results: Path, name: str) -> int:
    """Wall time of one run (the runner's clock, else pytest's in the JUnit XML)."""
    if (results / f"{name}.time").is_file():
        return int((results / f"{name}.time").read_text())
    if not (results / f"{name}.xml").is_file():
        return 0
    suite = ET.parse(results / f"{name}.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return round(float(suite.get("time", 0)))


def log_outcomes(log: Path) -> dict[str, tuple[str, str]]:
    """Per-test outcomes from a ``-v`` log (a run cut short has no JUnit XML yet): the tests
    that ran so far; a failure's message is taken from the short summary where there is one."""
    out: dict[str, tuple[str, str]] = {}
    word = {
        "PASSED": "pass",
        "FAILED": "fail",
        "ERROR": "fail",
        "SKIPPED": "skip",
        "XFAIL": "xfail",
        "XPASS": "fail",
    }
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split(" ")
        if line.startswith("tests/") and len(parts) > 1 and parts[1] in word:
            tid = parts[0]
            if tid not in out or word[parts[1]] == "fail":
                out[tid] = (word[parts[1]], out.get(tid, ("", ""))[1])
        elif line.startswith(("FAILED tests/", "ERROR tests/")):
            tid, _, msg = line.split(" ", 1)[1].partition(" - ")
            if tid in out:
                out[tid] = ("fail", msg.strip())
    return out


def report(results: Path, out: Path) -> int:
    data, seconds, reruns = {}, {}, {}
    for m in MODES:
        for name in parts(results, m):
            if (results / f"{name}.xml").is_file():
                got = outcomes(results / f"{name}.xml")
            else:
                got = log_outcomes(results / f"{name}.log")
                print(f"{name}: no JUnit XML (run unfinished?); {len(got)} tests from its log")
            data.setdefault(m, {}).update(got)
            if ".rerun" in name:
                commit = results / f"{name}.commit"
                reruns.setdefault(m, []).append(
                    (
                        len(got),
                        suite_seconds(results, name),
                        commit.read_text().strip() if commit.is_file() else "unknown",
                    )
                )
            else:
                seconds[m] = seconds.get(m, 0) + suite_seconds(results, name)
    if "scanpy" not in data:
        sys.exit("no results of the unmodified run (mode scanpy)")
    base = data["scanpy"]
    regressions = {
        m: sorted(
            t for t, (o, _) in data[m].items() if o == "fail" and base.get(t, ("", ""))[0] == "pass"
        )
        for m in data
        if m != "scanpy"
    }
    files = sorted({t.split("::")[0] for d in data.values() for t in d})
    out.mkdir(parents=True, exist_ok=True)
    head = "| file | " + " | ".join(f"{m} pass/fail/skip" for m in data)
    head += " | " + " | ".join(f"regressions {m}" for m in regressions) + " |"
    lines = [
        f"# scanpy {version('scanpy')}'s own tests with gpu_sc substituted",
        "",
        "Made by `scripts/test_scanpy_suite.sh`. Modes: **scanpy** unmodified; **gpu_sc** each "
        "`scanpy.pp`/`scanpy.tl` function gpu_sc implements replaced by gpu_sc's "
        '(`backend="numpy"`, records as shipped); **strict** the same with `GPU_SC_STRICT=1` (a '
        "fallback to scanpy raises). A regression: passed unmodified, failed substituted. "
        "skip counts xfail and tests skipped for data that cannot be had offline.",
        "",
        head,
        "|" + "---|" * (1 + len(data) + len(regressions)),
    ]
    totals = {m: [0, 0, 0] for m in data}
    for f in files:
        cells = []
        for m, d in data.items():
            c = [
                sum(1 for t, (o, _) in d.items() if t.split("::")[0] == f and o in os_)
                for os_ in (("pass",), ("fail",), ("skip", "xfail"))
            ]
            totals[m] = [a + b for a, b in zip(totals[m], c, strict=True)]
            cells.append("/".join(map(str, c)))
        regs = [str(sum(1 for t in r if t.split("::")[0] == f)) for r in regressions.values()]
        lines.append(f"| {f} | " + " | ".join(cells) + " | " + " | ".join(regs) + " |")
    lines.append(
        "| **total** | "
        + " | ".join("/".join(map(str, totals[m])) for m in data)
        + " | "
        + " | ".join(f"**{len(r)}**" for r in regressions.values())
        + " |"
    )
    n_base = len(base)
    short = [
        f"{m}: {len(d)} of {n_base}" for m, d in data.items() if m != "scanpy" and len(d) < n_base
    ]
    if short:
        lines += [
            "",
            "**Runs cut short** (tests that ran; regressions only among them): "
            + ", ".join(short)
            + ".",
        ]
    if reruns:
        lines += [
            "",
            "**Rerun** (`--ids`): "
            + ", ".join(
                f"{m}: {n} tests at code {c} ({s} s)"
                for m, runs in reruns.items()
                for n, s, c in runs
            )
            + "; the regressions of the earlier run and the tests it had not reached (a "
            "later rerun's outcomes replace an earlier one's). The other tests keep their outcome of the earlier run (their code paths passed "
            "there).",
        ]
    if seconds:
        lines += [
            "",
            "Wall time here (2 shared cores) of the runs over all files: "
            + ", ".join(f"{m} {s} s" for m, s in seconds.items())
            + ".",
        ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    json.dump(
        {
            "scanpy": version("scanpy"),
            "seconds": seconds,
            "regressions": regressions,
            "tests": {m: {t: list(v) for t, v in sorted(d.items())} for m, d in data.items()},
        },
        open(out / "outcomes.json", "w"),
        indent=1,
    )
    text = []
    for m, regs in regressions.items():
        text.append(f"## mode {m}: {len(regs)} regressions")
        text += [f"{t}\t{m}\t{data[m][t][1]}" for t in regs]
    (out / "regressions.txt").write_text("\n".join(text) + "\n")
    print("\n".join(lines))
    for m, regs in regressions.items():
        print(f"\nregressions in mode {m} ({len(regs)}):")
        for t in regs:
            print(f"  {t}\n      {data[m][t][1][:160]}")
    return sum(len(r) for r in regressions.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("command", choices=["prepare", "run", "report", "all"])
    ap.add_argument("modes", nargs="*", default=list(MODES))
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="JUnit XML and logs (default: $SCANPY_SUITE_DIR/results)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scanpy_suite")
    ap.add_argument("--pytest-args", default="", help="extra pytest arguments, one string")
    ap.add_argument(
        "--files", default=None, help="comma-separated test files (default: all); with --part"
    )
    ap.add_argument("--part", default="", help="e.g. .part2: a piece of a split run")
    ap.add_argument(
        "--ids",
        type=Path,
        default=None,
        help="a file of test ids, one a line: rerun only those (outputs mode.rerun, "
        "whose outcomes replace the earlier ones in the report)",
    )
    ap.add_argument(
        "--reverse",
        action="store_true",
        help="run the tests last to first (a second process beside a forward run)",
    )
    args = ap.parse_args()
    if args.reverse:
        os.environ["GPU_SC_SUITE_REVERSE"] = "1"
    results = args.results or cache_dir() / "results"
    if args.command in ("prepare", "all"):
        prepare()
    if args.command in ("run", "all"):
        for mode in args.modes:
            if mode not in MODES:
                sys.exit(f"unknown mode {mode!r}; one of {MODES}")
            files = args.files.split(",") if args.files else TEST_FILES
            ids = None
            if args.ids:
                ids = [t.strip() for t in args.ids.read_text().splitlines() if t.strip()]
            part = args.part or (".rerun" if ids else "")
            run(mode, results, args.pytest_args.split(), files, part, ids)
    if args.command in ("report", "all"):
        report(results, args.out)


if __name__ == "__main__":
    main()
