"""Plain-loop reference implementations of the losses, written from the papers' formulas.

Deliberately slow and obvious: per sample, per group, per class, in float64, sharing no code with
``ltkd_hf.losses``. Built from torch scalar ops so that autograd gives reference gradients.
"""

from __future__ import annotations

import torch


def _softmax_row(row: torch.Tensor, temperature: float) -> list[torch.Tensor]:
    values = [v / temperature for v in row]
    top = max(float(v.detach()) for v in values)
    exps = [torch.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: list[torch.Tensor], q: list[torch.Tensor]) -> torch.Tensor:
    """sum_i p_i log(p_i / q_i), with 0 log 0 = 0."""
    terms = [pi * (torch.log(pi) - torch.log(qi)) for pi, qi in zip(p, q) if float(pi) > 0]
    return sum(terms, torch.zeros((), dtype=torch.float64))


def ltkd_reference(zs, zt, class_to_group, *, temperature, alpha, beta, rebalance, reweight):
    """LTKD as the paper defines it, loop by loop: returns (loss, cross, within) as float64 0-dim tensors."""
    zs, zt = zs.double(), zt.double().detach()
    groups = sorted(set(int(g) for g in class_to_group))
    members = {g: [c for c, gc in enumerate(class_to_group) if int(gc) == g] for g in groups}
    batch = zs.shape[0]
    p_s = [_softmax_row(zs[b], temperature) for b in range(batch)]
    p_t = [_softmax_row(zt[b], temperature) for b in range(batch)]
    b_s = [[sum(p_s[b][c] for c in members[g]) for g in groups] for b in range(batch)]
    b_t = [[sum(p_t[b][c] for c in members[g]) for g in groups] for b in range(batch)]
    target = b_t
    if rebalance:
        sums = [sum(float(b_t[b][k]) for b in range(batch)) for k in range(len(groups))]
        mean = sum(sums) / len(sums)
        scales = [mean / s for s in sums]
        target = []
        for b in range(batch):
            norm = sum(scales[k] * b_t[b][k] for k in range(len(groups)))
            target.append([scales[k] * b_t[b][k] / norm for k in range(len(groups))])
    cross = sum(_kl(target[b], b_s[b]) for b in range(batch)) / batch
    within = torch.zeros((), dtype=torch.float64)
    for b in range(batch):
        for k, g in enumerate(groups):
            q_t = [p_t[b][c] / b_t[b][k] for c in members[g]]
            q_s = [p_s[b][c] / b_s[b][k] for c in members[g]]
            weight = 1.0 if reweight else b_t[b][k]
            within = within + weight * _kl(q_t, q_s)
    within = within / batch
    loss = temperature**2 * (alpha * cross + beta * within)
    return loss, cross, within


def kd_reference(zs, zt, *, temperature):
    zs, zt = zs.double(), zt.double().detach()
    batch = zs.shape[0]
    kl = sum(_kl(_softmax_row(zt[b], temperature), _softmax_row(zs[b], temperature)) for b in range(batch)) / batch
    return temperature**2 * kl


def dkd_reference(zs, zt, labels, *, alpha, beta, temperature):
    """Zhao et al. 2022, Eq. 7 (as mdistiller computes it): returns (loss, tckd, nckd)."""
    zs, zt = zs.double(), zt.double().detach()
    batch, num_classes = zs.shape
    tckd = nckd = torch.zeros((), dtype=torch.float64)
    for b in range(batch):
        y = int(labels[b])
        p_s, p_t = _softmax_row(zs[b], temperature), _softmax_row(zt[b], temperature)
        others = [c for c in range(num_classes) if c != y]
        # 1 - p_y as the sum of the others: exact even when p_y rounds to 1.
        rest_t, rest_s = sum(p_t[c] for c in others), sum(p_s[c] for c in others)
        tckd = tckd + _kl([p_t[y], rest_t], [p_s[y], rest_s])
        q_t = [p_t[c] / rest_t for c in others]
        q_s = [p_s[c] / rest_s for c in others]
        nckd = nckd + _kl(q_t, q_s)
    tckd, nckd = temperature**2 * tckd / batch, temperature**2 * nckd / batch
    return alpha * tckd + beta * nckd, tckd, nckd


def _pearson(a: list[torch.Tensor], b: list[torch.Tensor], eps: float = 1e-8) -> torch.Tensor:
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    da, db = [x - mean_a for x in a], [x - mean_b for x in b]
    cov = sum(x * y for x, y in zip(da, db))
    return cov / (torch.sqrt(sum(x * x for x in da)) * torch.sqrt(sum(y * y for y in db)) + eps)


def dist_reference(zs, zt, *, beta, gamma, tau):
    """Huang et al. 2022 (the reference implementation's eps included): returns (loss, inter, intra)."""
    zs, zt = zs.double(), zt.double().detach()
    batch, num_classes = zs.shape
    y_s = [_softmax_row(zs[b], tau) for b in range(batch)]
    y_t = [_softmax_row(zt[b], tau) for b in range(batch)]
    inter = 1 - sum(_pearson(y_s[b], y_t[b]) for b in range(batch)) / batch
    columns = [([y_s[b][c] for b in range(batch)], [y_t[b][c] for b in range(batch)]) for c in range(num_classes)]
    intra = 1 - sum(_pearson(s, t) for s, t in columns) / num_classes
    inter, intra = tau**2 * inter, tau**2 * intra
    return beta * inter + gamma * intra, inter, intra


def effective_number_weights_reference(class_counts, beta):
    weights = [(1 - beta) / (1 - beta**n) for n in class_counts]
    total = sum(weights)
    return [w * len(weights) / total for w in weights]


def bkd_reference(zs, zt, class_counts, *, temperature, effective_number_beta):
    zs, zt = zs.double(), zt.double().detach()
    weights = effective_number_weights_reference(class_counts, effective_number_beta)
    batch = zs.shape[0]
    kl = torch.zeros((), dtype=torch.float64)
    for b in range(batch):
        p_t = _softmax_row(zt[b], temperature)
        norm = sum(w * p for w, p in zip(weights, p_t))
        kl = kl + _kl([w * p / norm for w, p in zip(weights, p_t)], _softmax_row(zs[b], temperature))
    return temperature**2 * kl / batch


def random_groups(num_classes: int, num_groups: int, generator: torch.Generator) -> torch.Tensor:
    """A class -> group map with every group non-empty, in shuffled order."""
    return torch.randperm(num_classes, generator=generator) % num_groups

