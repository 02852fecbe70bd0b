"""Simulated test rows for the statistics tests: labels and two models' correlated scores, equally
good (to measure false promotions) or with a known gap (to measure power)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps


def binormal(rng, n, auc_a, auc_b, prevalence=0.3, rho=0.5):
    """Scores with exactly known AUCs: ``s_k = mu_k y + e_k``, ``e_k ~ N(0, 1)``, corr(e_a, e_b) = rho.

    A positive's score is ``N(mu, 1)`` and a negative's ``N(0, 1)``, so AUC = Phi(mu / sqrt 2).
    """
    y = (rng.random(n) < prevalence).astype(int)
    shared = rng.normal(size=n)
    mu_a, mu_b = (math.sqrt(2) * sps.norm.ppf(auc) for auc in (auc_a, auc_b))
    e_a = rho * shared + math.sqrt(1 - rho**2) * rng.normal(size=n)
    e_b = rho * shared + math.sqrt(1 - rho**2) * rng.normal(size=n)
    return y, mu_a * y + e_a, mu_b * y + e_b


def latent_pair(rng, n, prevalence, separation, noise_a, noise_b):
    """Labels and two correlated scores: a shared latent ``separation * y + N(0, 1)`` plus each
    model's own noise ``noise_k * N(0, 1)``; the less noisy model is the better one."""
    y = (rng.random(n) < prevalence).astype(int)
    latent = separation * y + rng.normal(size=n)
    return y, latent + noise_a * rng.normal(size=n), latent + noise_b * rng.normal(size=n)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def equally_good(rng, n, prevalence=0.3):
    """Two models equally good in every metric: the same signal plus independent noise of equal variance."""
    y, a, b = latent_pair(rng, n, prevalence, separation=1.2, noise_a=0.8, noise_b=0.8)
    return y, sigmoid(a - 1.5), sigmoid(b - 1.5)
