"""Synthetic data: the spiked dictionary model and its geometry statistics (book: paper facts, synthetic protocol "Support recovery").

Dictionary. A shared spike v ~ N(0, I_n) and independent u_i ~ N(0, I_n) are drawn and normalised; atom i is

    d_i = normalise( √(1−ρ) u_i + √ρ v ),

so the mean |off-diagonal| of the Gram matrix is about ρ. Atoms are stored as the rows of ``D [m, n]`` (the SAE
decoder layout ``W_dec``).

Samples. Each sample has exactly k active atoms, chosen uniformly (top-k of m uniform scores), with magnitudes
U[a, b] (default U[1, 3]), optionally random signs, and x = h Dᵀ in column form, i.e. ``x = h @ D`` here, plus
optional Gaussian noise.

Randomness. One ``torch.Generator`` seeded with the config seed draws first the dictionary (v, then the u_i), then
every sample batch (scores, magnitudes, signs if ``signed``, noise if ``noise_std > 0``). Its state is exposed by
:meth:`SpikedDictionaryData.state_dict` so a trainer can resume the stream bit-identically. Draws happen on the
generator's device (``generator_device``, CPU by default so that CPU and GPU runs see the same numbers) in the
data dtype, then move to ``device``; the stream therefore depends on (seed, dtype, generator_device).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor

__all__ = [
    "spiked_dictionary",
    "SpikedDictionaryConfig",
    "SpikedDictionaryData",
    "gram_matrix",
    "mutual_coherence",
    "mean_abs_offdiag",
    "sample_supports",
    "active_gram_stats",
    "irrepresentable_condition",
    "dictionary_statistics",
]


def _check_int(name: str, value: int, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_rho(rho: float) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (0.0 <= float(rho) < 1.0):
        raise ValueError(f"rho must be a float in [0, 1), got {rho!r}")
    return float(rho)


def _check_generator(generator: torch.Generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def spiked_dictionary(
    n: int,
    m: int,
    rho: float,
    generator: torch.Generator,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Spiked dictionary ``D [m, n]`` with unit-norm rows (book: paper facts, synthetic protocol).

    Draws v ~ N(0, I_n) (then u_i ~ N(0, I_n) for i = 1..m) from ``generator`` on its own device, normalises
    them, and returns rows d_i = normalise(√(1−ρ) u_i + √ρ v) on ``device`` (default: the generator's device).
    """
    n = _check_int("n", n, 1)
    m = _check_int("m", m, 1)
    rho = _check_rho(rho)
    generator = _check_generator(generator)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating type, got {dtype}")
    gdev = generator.device
    v = torch.randn(n, generator=generator, device=gdev, dtype=dtype)
    v = v / v.norm()
    u = torch.randn(m, n, generator=generator, device=gdev, dtype=dtype)
    u = u / u.norm(dim=1, keepdim=True)
    d = math.sqrt(1.0 - rho) * u + math.sqrt(rho) * v
    d = d / d.norm(dim=1, keepdim=True)
    return d.to(device if device is not None else gdev)


@dataclass
class SpikedDictionaryConfig:
    """Configuration of the spiked-dictionary data model (book: paper facts, synthetic protocol; defaults are the paper's v1 sizes)."""

    n: int = 256
    """Input dimension (d_in of the SAE)."""
    m: int = 1024
    """Number of true atoms (4x overcomplete by default)."""
    k: int = 16
    """Exactly k active atoms per sample."""
    rho: float = 0.0
    """Spike strength in [0, 1): mean |cos| between atoms is about rho."""
    magnitude_low: float = 1.0
    """Lower end of the U[low, high] magnitudes of the active codes."""
    magnitude_high: float = 3.0
    """Upper end of the U[low, high] magnitudes of the active codes."""
    signed: bool = False
    """Give active codes random ±1 signs (off in the paper)."""
    noise_std: float = 0.0
    """Std of i.i.d. Gaussian noise added to x (0 in all paper configs)."""
    seed: int = 0
    """Seed of the single generator that draws the dictionary and then the samples."""
    generator_device: str = "cpu"
    """Device of the generator (draws happen there, then move to the data device)."""

    def __post_init__(self) -> None:
        _check_int("n", self.n, 1)
        _check_int("m", self.m, 1)
        _check_int("k", self.k, 1)
        if self.k > self.m:
            raise ValueError(f"k must be <= m={self.m}, got k={self.k}")
        _check_rho(self.rho)
        for name in ("magnitude_low", "magnitude_high", "noise_std"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) or val < 0:
                raise ValueError(f"{name} must be a finite float >= 0, got {val!r}")
        if self.magnitude_high < self.magnitude_low:
            raise ValueError(
                f"magnitude_high must be >= magnitude_low={self.magnitude_low}, got {self.magnitude_high}"
            )
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed must be a bool, got {self.signed!r}")
        _check_int("seed", self.seed, 0)
        if not isinstance(self.generator_device, str):
            raise ValueError(f"generator_device must be a device string such as 'cpu', got {self.generator_device!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpikedDictionaryConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SpikedDictionaryConfig fields {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**d)


class SpikedDictionaryData:
    """Online sampler for the spiked dictionary model (book: paper facts, synthetic protocol).

    ``data.dictionary`` is ``D [m, n]`` (unit rows); ``data.sample(B)`` returns ``(x [B, n], h_true [B, m])``.
    Fresh samples are drawn at every call from the one generator that also drew the dictionary.
    """

    def __init__(
        self,
        config: SpikedDictionaryConfig | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.config = config if config is not None else SpikedDictionaryConfig()
        if not isinstance(self.config, SpikedDictionaryConfig):
            raise TypeError(f"config must be a SpikedDictionaryConfig, got {type(self.config).__name__}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating type, got {dtype}")
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        c = self.config
        self.generator = torch.Generator(device=c.generator_device)
        self.generator.manual_seed(c.seed)
        self.dictionary = spiked_dictionary(c.n, c.m, c.rho, self.generator, device=self.device, dtype=dtype)
        self.samples_drawn = 0

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Draw ``(x [B, n], h_true [B, m])`` with exactly k active codes per row (book: paper facts, synthetic protocol "Codes").

        Draw order: uniform scores [B, m] (support = top-k), magnitudes U[low, high] [B, k], signs [B, k] if
        ``signed``, noise [B, n] if ``noise_std > 0``.
        """
        B = _check_int("batch_size", batch_size, 1)
        c, g = self.config, self.generator
        gdev = g.device
        scores = torch.rand(B, c.m, generator=g, device=gdev, dtype=self.dtype)
        idx = scores.topk(c.k, dim=1).indices  # [B, k]
        mags = c.magnitude_low + (c.magnitude_high - c.magnitude_low) * torch.rand(
            B, c.k, generator=g, device=gdev, dtype=self.dtype
        )
        if c.signed:
            signs = torch.randint(0, 2, (B, c.k), generator=g, device=gdev).to(self.dtype) * 2 - 1
            mags = mags * signs
        h = torch.zeros(B, c.m, device=gdev, dtype=self.dtype).scatter_(1, idx, mags).to(self.device)
        x = h @ self.dictionary  # [B, n]
        if c.noise_std > 0:
            x = x + c.noise_std * torch.randn(B, c.n, generator=g, device=gdev, dtype=self.dtype).to(self.device)
        self.samples_drawn += B
        return x, h

    def population_mean(self) -> Tensor:
        """The exact mean E[x] [n] of the samples: each atom is active with probability k/m, with mean magnitude
        (low + high)/2 (0 when ``signed``), so E[x] = (k/m)·E|h|·Σ_i d_i (plus no noise term: it has mean 0)."""
        c = self.config
        mag = 0.0 if c.signed else (c.magnitude_low + c.magnitude_high) / 2
        return (c.k / c.m) * mag * self.dictionary.sum(0)

    def state_dict(self) -> dict:
        """Generator state plus the config and the number of samples drawn (for bit-identical resumption)."""
        return {
            "config": self.config.to_dict(),
            "generator_state": self.generator.get_state(),
            "samples_drawn": self.samples_drawn,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator state saved by :meth:`state_dict`; the config must match this object's."""
        for key in ("config", "generator_state", "samples_drawn"):
            if key not in state:
                raise ValueError(f"state dict is missing '{key}'; expected keys config, generator_state, samples_drawn")
        if state["config"] != self.config.to_dict():
            raise ValueError(
                f"state dict config {state['config']} does not match this data's config {self.config.to_dict()}"
            )
        self.generator.set_state(state["generator_state"])
        self.samples_drawn = int(state["samples_drawn"])


# ----------------------------------------------------------------------------------------------------------
# dictionary statistics (book: paper facts, synthetic protocol table and §3 "How the spiked dictionaries behave")
# ----------------------------------------------------------------------------------------------------------


def _check_dict(D: Tensor) -> Tensor:
    if not isinstance(D, Tensor):
        raise TypeError(f"D must be a torch.Tensor [m, n], got {type(D).__name__}")
    if D.dim() != 2 or D.shape[0] < 2:
        raise ValueError(f"D must be [m, n] with m >= 2 atoms as rows, got shape {tuple(D.shape)}")
    if not torch.isfinite(D).all():
        raise ValueError("D contains NaN or infinite entries")
    return D


def gram_matrix(D: Tensor, *, normalise: bool = True) -> Tensor:
    """Gram matrix G = D Dᵀ of the atoms (rows of ``D [m, n]``) → ``[m, m]``; cosines if ``normalise``."""
    D = _check_dict(D)
    if normalise:
        D = D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return D @ D.T


def _offdiag_abs(D: Tensor) -> Tensor:
    G = gram_matrix(D).abs()
    return G[~torch.eye(G.shape[0], dtype=torch.bool, device=G.device)]


def mutual_coherence(D: Tensor) -> float:
    """Mutual coherence max_{i≠j} |cos(d_i, d_j)| of the atoms (book: paper facts, synthetic protocol table, "max |offdiag|")."""
    return float(_offdiag_abs(D).max())


def mean_abs_offdiag(D: Tensor) -> float:
    """Mean over i≠j of |cos(d_i, d_j)| (book: paper facts, synthetic protocol table, "mean |offdiag|", ≈ ρ)."""
    return float(_offdiag_abs(D).mean())


def sample_supports(m: int, k: int, n_sets: int, generator: torch.Generator) -> Tensor:
    """``n_sets`` uniformly random k-subsets of {0..m−1} as a sorted index tensor ``[n_sets, k]``.

    Same rule as the data (top-k of uniform scores), drawn on the generator's device.
    """
    _check_int("m", m, 1)
    _check_int("k", k, 1)
    _check_int("n_sets", n_sets, 1)
    if k > m:
        raise ValueError(f"k must be <= m={m}, got {k}")
    generator = _check_generator(generator)
    scores = torch.rand(n_sets, m, generator=generator, device=generator.device)
    return scores.topk(k, dim=1).indices.sort(dim=1).values


def _supports_on(D: Tensor, supports: Tensor) -> Tensor:
    if not isinstance(supports, Tensor) or supports.dtype.is_floating_point or supports.dtype == torch.bool:
        raise TypeError("supports must be an integer index tensor [k] or [S, k]")
    s = supports.unsqueeze(0) if supports.dim() == 1 else supports
    if s.dim() != 2:
        raise ValueError(f"supports must be [k] or [S, k], got shape {tuple(supports.shape)}")
    m = D.shape[0]
    if s.numel() and (s.min() < 0 or s.max() >= m):
        raise ValueError(f"support indices must lie in [0, {m}), got range [{int(s.min())}, {int(s.max())}]")
    return s.to(D.device)


def active_gram_stats(
    D: Tensor,
    k: int | None = None,
    n_sets: int = 100,
    generator: torch.Generator | None = None,
    *,
    supports: Tensor | None = None,
) -> dict[str, float | Tensor]:
    """Spectrum of the active Gram G_AA = D_A D_Aᵀ over random supports A of size k (book: paper facts, synthetic protocol table).

    Either pass ``k``, ``n_sets`` and a ``generator`` (supports via :func:`sample_supports`), or ``supports``
    ``[S, k]`` directly. Returns the means ``lambda_min_mean`` = E[λ_min(G_AA)] and ``cond_mean`` = E[cond(G_AA)]
    (cond = λ_max/λ_min), their standard deviations over sets, and the per-set values ``lambda_min`` and
    ``cond`` (tensors ``[S]``). Atoms are normalised first; eigenvalues are computed in float64.
    """
    D = _check_dict(D)
    if supports is None:
        if k is None or generator is None:
            raise ValueError("active_gram_stats needs either supports=[S, k] or both k and generator")
        supports = sample_supports(D.shape[0], k, n_sets, generator)
    s = _supports_on(D, supports)
    Dn = D.double() / D.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    DA = Dn[s]  # [S, k, n]
    ev = torch.linalg.eigvalsh(DA @ DA.transpose(1, 2))  # [S, k] ascending
    lam_min, lam_max = ev[:, 0], ev[:, -1]
    cond = lam_max / lam_min
    return {
        "lambda_min_mean": float(lam_min.mean()),
        "lambda_min_std": float(lam_min.std()) if lam_min.numel() > 1 else 0.0,
        "cond_mean": float(cond.mean()),
        "cond_std": float(cond.std()) if cond.numel() > 1 else 0.0,
        "lambda_min": lam_min,
        "cond": cond,
    }


def irrepresentable_condition(D: Tensor, support: Tensor, sign: Tensor | None = None) -> Tensor:
    """Exact irrepresentable-condition value ‖G_{AᶜA} G_AA^{-1} s‖_∞ (book: paper facts, theory, Zhao & Yu; "IRC_exact").

    ``s`` is the sign vector of the true code on A; it defaults to all ones (non-negative codes), as in the
    dictionary-statistics table of the authors' reference implementation. The lasso recovers the support (for small noise) only if the value is < 1.

    Args:
        D: dictionary ``[m, n]`` (rows = atoms; normalised first).
        support: index tensor ``[k]`` or a batch of supports ``[S, k]``.
        sign: optional ±1 tensor ``[k]`` or ``[S, k]``.

    Returns:
        Float64 tensor ``[S]`` (0-dim for a single ``[k]`` support).
    """
    D = _check_dict(D)
    single = isinstance(support, Tensor) and support.dim() == 1
    s = _supports_on(D, support)
    S, k = s.shape
    m = D.shape[0]
    if k >= m:
        raise ValueError(f"support size k={k} must be < m={m} so that the complement is non-empty")
    Dn = D.double() / D.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    G = Dn @ Dn.T  # [m, m]
    if sign is None:
        sgn = torch.ones(S, k, dtype=torch.float64, device=D.device)
    else:
        sgn = (sign.unsqueeze(0) if sign.dim() == 1 else sign).to(device=D.device, dtype=torch.float64)
        if sgn.shape != (S, k):
            raise ValueError(f"sign must have shape [k]=[{k}] or [S, k]=[{S}, {k}], got {tuple(sign.shape)}")
    G_AA = G[s.unsqueeze(2), s.unsqueeze(1)]  # [S, k, k]
    z = torch.linalg.solve(G_AA, sgn.unsqueeze(2)).squeeze(2)  # [S, k] = G_AA^{-1} s
    G_rowsA = G[s]  # [S, k, m] = G_{A, :}
    v = (G_rowsA * z.unsqueeze(2)).sum(1)  # [S, m] = G_{:, A} G_AA^{-1} s
    in_A = torch.zeros(S, m, dtype=torch.bool, device=D.device)
    in_A.scatter_(1, s, True)
    out = v.abs().masked_fill(in_A, 0.0).amax(dim=1)
    return out[0] if single else out


def dictionary_statistics(
    D: Tensor,
    k: int,
    n_sets: int = 100,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """All geometry statistics of the book: paper facts, synthetic protocol table for one dictionary ``D [m, n]``.

    Keys: ``mean_abs_offdiag``, ``max_abs_offdiag`` (mutual coherence), ``lambda_min_mean``/``_std``,
    ``cond_mean``/``_std`` (active Gram over ``n_sets`` random supports of size ``k``), ``irc_mean``/``_std``/
    ``irc_max`` (exact IRC with s = 1 over the same supports), ``irc_frac_violated`` (share of supports with
    IRC ≥ 1) and ``n_sets``. The "IRC_exact" row of the authors' table matches the **mean** over 100 supports, not the max
    (tests/test_data.py compares both tables). Supports come from ``generator`` (a CPU generator seeded 0 if None).
    """
    D = _check_dict(D)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    supports = sample_supports(D.shape[0], k, n_sets, generator)
    gram = active_gram_stats(D, supports=supports)
    irc = irrepresentable_condition(D, supports)
    return {
        "mean_abs_offdiag": mean_abs_offdiag(D),
        "max_abs_offdiag": mutual_coherence(D),
        "lambda_min_mean": gram["lambda_min_mean"],
        "lambda_min_std": gram["lambda_min_std"],
        "cond_mean": gram["cond_mean"],
        "cond_std": gram["cond_std"],
        "irc_mean": float(irc.mean()),
        "irc_std": float(irc.std()) if irc.numel() > 1 else 0.0,
        "irc_max": float(irc.max()),
        "irc_frac_violated": float((irc >= 1).double().mean()),
        "n_sets": n_sets,
    }
