"""Neural-collapse metrics for features you already have (any network, any framework).

    python examples/nc_metrics_on_arrays.py

Here the "features" are a simplex ETF of K class means plus isotropic Gaussian noise, where NC1 has a closed
form: Σ_W = σ² I and Σ_B has K−1 eigenvalues s²/(K−1) (s = ‖μ_k − μ_G‖), so
nc1 = tr(Σ_W Σ_B†)/K = σ² (K−1)² / (K s²). Replace H, y, W, b with your own arrays (numpy or torch).
"""

import numpy as np

from nclab.collapse import metrics_from_arrays


def main(K: int = 10, D: int = 64, n_per_class: int = 2000, s: float = 4.0, sigma: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    etf = np.eye(K) - 1.0 / K  # simplex ETF in the first K coordinates (norm of each row: sqrt((K-1)/K))
    means = np.zeros((K, D))
    means[:, :K] = etf * s / np.sqrt((K - 1) / K)  # ‖μ_k − μ_G‖ = s
    y = np.repeat(np.arange(K), n_per_class)
    H = (means[y] + sigma * rng.standard_normal((y.size, D))).astype(np.float32)  # (N, D), as a network gives
    W, b = means.copy(), np.zeros(K)  # a classifier aligned with the means (self-duality, NC3)

    m = metrics_from_arrays(H, y, W, b)  # dict: every metric named with its normalisation (docs/metrics.md)
    expected_nc1 = sigma**2 * (K - 1) ** 2 / (K * s**2)
    print(f"nc1 = tr(Σ_W Σ_B†)/K     {m['nc1']:.4f}   (closed form {expected_nc1:.4f})")
    print(f"nc1_quotient = trΣ_W/trΣ_B {m['nc1_quotient']:.4f}")
    print(f"cdnv                      {m['cdnv']:.4f}")
    print(f"etf_error_means           {m['etf_error_means']:.4f}   (0 for an exact simplex ETF)")
    print(f"self_duality              {m['self_duality']:.2e}")
    print(f"ncc_mismatch              {m['ncc_mismatch']:.4f}   (classifier vs nearest class mean)")
    return m, expected_nc1


if __name__ == "__main__":
    main()
