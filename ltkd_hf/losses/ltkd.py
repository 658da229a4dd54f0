"""LTKD (Kim, CVPR 2026): rebalanced cross-group KL + reweighted within-group KL, exact and K-independent.

With ``x = z / T``, group ``G`` and ``glse_G = logsumexp_{i in G} x_i``, per sample:

* cross-group mass ``log b_G = glse_G - logsumexp_all(x)``;
* within-group ``KL(q_t,G || q_s,G) = sum_{i in G} q_t,i (x_t,i - x_s,i) - (glse_t,G - glse_s,G)``
  (``q_t`` sums to one over each group), so no per-class log-probability is ever materialised.

Group reductions are ``scatter``/``index_add`` over the class axis of class-major tensors, so the cost
does not grow with K (no loop over groups, no one-hot C x K matmul), and the backward pass is the closed
form (see ``_LTKDFunction``) rather than autograd through the scatters. The per-class exponentials are
base 2 (``exp2`` is ~3x faster than ``exp`` on CPU); the ``(K, B)`` per-group quantities go through torch's
fused ``log_softmax`` and ``kl_div``; the returned terms are in nats.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ._checks import check_class_to_group, check_flag, check_logits, check_nonnegative, check_positive
from ._numerics import compute_dtype, statistics_dtype
from ..groups import ClassGroups
from .registry import DistillationLoss, register_loss

__all__ = ["LTKDLoss", "ltkd_loss", "rebalance_group_mass", "rebalance_log_scales"]


_LOG2_E = 1.4426950408889634
_LN_2 = 0.6931471805599453


def rebalance_log_scales(group_sums: torch.Tensor) -> torch.Tensor:
    """Natural log of the paper's rebalancing factors ``s_G = mean_G'(S_G') / S_G`` for group sums ``S``.

    ``s_G * S_G`` is the same for every group. A group with no mass at all (``S_G`` underflowed to 0) is
    treated as holding the smallest positive float, so its factor stays finite.
    """
    sums = group_sums.clamp_min(torch.finfo(group_sums.dtype).tiny)
    return sums.mean().log() - sums.log()


def _batch_group_sums(log_mass: torch.Tensor, batch_dim: int, sync_across_processes: bool) -> torch.Tensor:
    """``S_G = sum_x b_t,G(x)`` from the log masses, over the batch (the global batch when processes are synced),
    summed in `statistics_dtype`: a float32 sum of masses below e^-87 is 0, which would drop the group's boost."""
    sums = log_mass.to(statistics_dtype(log_mass.device)).exp().sum(batch_dim)
    if sync_across_processes and dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return sums


def _rebalanced_log_target(log_mass: torch.Tensor, group_sums: torch.Tensor, dim: int) -> torch.Tensor:
    """``log b̂`` from log masses whose groups run along ``dim`` (0: class-major ``(K, B)``; 1: ``(B, K)``):
    ``log_softmax`` over the groups of ``log b_G - log S_G``.

    ``log s_G = log mean(S) - log S_G``; the constant ``log mean(S)`` cancels in the per-sample
    renormalisation, and ``log_softmax`` neither overflows nor turns into ``inf * 0`` however far apart the
    ``s_G`` are. A group with no mass at all (``S_G`` underflowed to 0) counts as holding the smallest
    positive float, so its factor stays finite.
    """
    log_sums = group_sums.clamp_min(torch.finfo(group_sums.dtype).tiny).log().to(log_mass.dtype)  # log in S's dtype
    return torch.log_softmax(log_mass - (log_sums.unsqueeze(1) if dim == 0 else log_sums), dim=dim)


def rebalance_group_mass(
    teacher_group_mass: torch.Tensor,
    group_sums: torch.Tensor | None = None,
    *,
    sync_across_processes: bool = True,
) -> torch.Tensor:
    """The rebalanced cross-group target ``b̂_t`` from the teacher's group masses.

    Args:
        teacher_group_mass: ``(batch, K)`` group masses ``b_t`` of the teacher (rows sum to 1).
        group_sums: the batch sums ``S_G``; by default ``sum_x b_t,G(x)`` over this batch, all-reduced over
            processes when ``torch.distributed`` is initialised and ``sync_across_processes`` is on.

    Returns:
        ``(batch, K)`` ``b̂_t,G = s_G b_t,G / sum_G' s_G' b_t,G'`` with ``s_G = mean(S) / S_G``. Carries no
        gradient: it is the frozen teacher's target.
    """
    log_mass = teacher_group_mass.detach().log()
    if group_sums is None:
        group_sums = _batch_group_sums(log_mass, 0, sync_across_processes)
    return _rebalanced_log_target(log_mass, group_sums, dim=1).exp_()


def _grouped_exp2(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    class_to_group: torch.Tensor,
    num_groups: int,
    scale: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher side by side, class-major: ``x = scale * z`` ``(C, 2B)`` (student columns
    first), ``e = 2^(x - max of x's group)``, and the ``(K, 2B)`` group maxima and group sums of ``e``.

    Class-major layout turns every group reduction and broadcast into whole-row copies/adds (several
    times faster than strided ones), and stacking both models halves the number of kernel launches.
    Subtracting the *group* max keeps every group sum >= 1, so no group underflows to ``log 0`` however
    far its logits sit below the row's top logit.
    """
    x = torch.cat((student_logits.t(), teacher_logits.t()), dim=1)
    x = (x if x.dtype == dtype else x.to(dtype)).mul_(scale)
    group_max = x.new_full((num_groups, x.shape[1]), float("-inf")).scatter_reduce_(
        0, class_to_group.unsqueeze(1).expand_as(x), x, reduce="amax"
    )
    e = group_max.index_select(0, class_to_group)
    torch.sub(x, e, out=e).exp2_()
    group_sum = x.new_zeros(group_max.shape).index_add_(0, class_to_group, e)
    return x, e, group_max, group_sum


def _output_coefficient(grad_loss: torch.Tensor | None, loss_weight: float, grad_term: torch.Tensor | None):
    """The gradient reaching one term: ``loss_weight * grad_loss + grad_term``. Autograd passes ``None``, not
    zeros, for an output it did not reach (usually both terms, which are only logged)."""
    if grad_loss is None:
        return grad_term
    scaled = grad_loss * loss_weight
    return scaled if grad_term is None else scaled.add_(grad_term)


class _LTKDFunction(torch.autograd.Function):
    """Forward: the three LTKD terms. Backward: their closed-form student gradient.

    Per sample, with weights ``w_G`` (1, or ``b_t,G`` without reweighting):
    ``d cross / d x_s,i = q_s,i (b_s,g(i) - b̂_g(i))`` and ``d within / d x_s,i = w_g(i) (q_s,i - q_t,i)``;
    ``q = e / group_sum`` is folded into one ``(K, 2B)`` factor so the backward is one gather, one
    multiply and one subtraction over the classes.

    Where the batch is small (C = 100 on a GPU) the time is the number of operators launched, so every
    per-group quantity comes from one fused operator where torch has one (``log_softmax`` over the groups,
    ``kl_div``) rather than from its formula's steps.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, class_to_group, num_groups, temperature, alpha, beta,
                rebalance, reweight, sync_across_processes, group_sums):
        batch = student_logits.shape[0]
        x, e, group_max, group_sum = _grouped_exp2(
            student_logits, teacher_logits, class_to_group, num_groups, _LOG2_E / temperature,
            compute_dtype(student_logits, teacher_logits),
        )
        # Natural-log group log-sum-exps of z / T (x and group_max are in bits), and the group masses
        # log b = glse - logsumexp(glse), both models at once.
        glse = torch.log(group_sum).add_(group_max, alpha=_LN_2)
        log_b_s, log_b_t = torch.log_softmax(glse, dim=0).chunk(2, dim=1)
        glse_s, glse_t = glse.chunk(2, dim=1)
        b_t = log_b_t.exp()

        if rebalance:
            if group_sums is None:
                group_sums = _batch_group_sums(log_b_t, 1, sync_across_processes)
            log_target = _rebalanced_log_target(log_b_t, group_sums, dim=0)
            target = log_target.exp()
        else:
            log_target, target = log_b_t, b_t
        cross = torch.nn.functional.kl_div(log_b_s, log_target, reduction="sum", log_target=True).div_(batch)

        # within_G = sum_{i in G} q_t,i (x_t,i - x_s,i) ln 2 - (glse_t,G - glse_s,G)  (q_t sums to 1 over G)
        x_s, x_t = x.chunk(2, dim=1)
        _, e_t = e.chunk(2, dim=1)
        _, group_sum_t = group_sum.chunk(2, dim=1)
        weighted_diff = torch.sub(x_t, x_s).mul_(e_t)
        kl_groups = torch.zeros_like(glse_t).index_add_(0, class_to_group, weighted_diff)
        kl_groups = torch.addcdiv(glse_s - glse_t, kl_groups, group_sum_t, value=_LN_2)
        within = (kl_groups if reweight else kl_groups.mul_(b_t)).sum().div_(batch)
        loss = torch.add(cross * (temperature**2 * alpha), within, alpha=temperature**2 * beta)

        # The backward's chain factors 1/B (batch mean) and 1/T (x = z/T) ride on 1/group_sum.
        inv_sum = group_sum.reciprocal_().mul_(1.0 / (batch * temperature))
        ctx.save_for_backward(class_to_group, e, inv_sum, log_b_s.exp().sub_(target), None if reweight else b_t)
        ctx.hyper = (temperature**2 * alpha, temperature**2 * beta, student_logits.dtype)
        ctx.set_materialize_grads(False)
        return loss, cross, within

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, grad_cross, grad_within):
        cross_weight, within_weight, out_dtype = ctx.hyper
        # loss = T^2 (alpha cross + beta within); 1/B and 1/T are already in inv_sum.
        coef_cross = _output_coefficient(grad_loss, cross_weight, grad_cross)
        coef_within = _output_coefficient(grad_loss, within_weight, grad_within)
        if not ctx.needs_input_grad[0] or (coef_cross is None and coef_within is None):
            return (None,) * 11
        class_to_group, e, inv_sum, mass_gap, weight = ctx.saved_tensors
        if coef_cross is None:
            coef_cross = torch.zeros_like(coef_within)
        if coef_within is None:
            coef_within = torch.zeros_like(coef_cross)
        # grad_i = e_s,i F_s,g(i) - e_t,i F_t,g(i) with F_s = (coef_cross (b_s - b̂) + coef_within w) / sum_s
        # and F_t = coef_within w / sum_t.
        # Whole-tensor ops only (no out= into column slices): torch.compile then traces this backward with the
        # forward instead of falling back to running the whole function eagerly.
        if weight is None:
            factor_s = mass_gap.mul(coef_cross).add_(coef_within)
            factor_t = coef_within.expand_as(factor_s)
        else:
            factor_s = mass_gap.mul(coef_cross).addcmul_(weight, coef_within)
            factor_t = weight.mul(coef_within)
        terms = torch.cat((factor_s, factor_t), dim=1).mul_(inv_sum).index_select(0, class_to_group).mul_(e)
        grad_s, grad_t = terms.chunk(2, dim=1)
        # A transposed view, not a copy: matmul-based backward steps consume it as is.
        grad = grad_s.sub_(grad_t).t()
        return (grad if grad.dtype == out_dtype else grad.to(out_dtype),) + (None,) * 10


def _singleton_group_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    alpha: float,
    rebalance: bool,
    sync_across_processes: bool,
    class_sums: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """K = C ("continuous reweighting"): each group is one class, so ``b = p``, every within-group KL is
    exactly 0 and LTKD is KD towards the rebalanced teacher. KL is invariant to relabelling the classes,
    so the class -> group permutation never needs applying (``class_sums``, given, are per class)."""
    dtype = compute_dtype(student_logits, teacher_logits)
    log_p_s = torch.log_softmax(student_logits.to(dtype) / temperature, dim=1)
    log_target = torch.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)
    if rebalance:
        if class_sums is None:
            class_sums = _batch_group_sums(log_target, 0, sync_across_processes)
        log_target = _rebalanced_log_target(log_target, class_sums, dim=1)
    cross = torch.nn.functional.kl_div(log_p_s, log_target, reduction="batchmean", log_target=True)
    return {"loss": temperature**2 * alpha * cross, "cross_group": cross, "within_group": torch.zeros_like(cross)}


def ltkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    class_to_group: torch.Tensor,
    num_groups: int,
    *,
    temperature: float,
    alpha: float,
    beta: float,
    rebalance: bool,
    reweight: bool,
    sync_across_processes: bool,
    group_sums: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``ltkd_loss`` for a ``class_to_group`` already validated against ``num_groups`` (no device sync).

    ``group_sums``: the rebalancing sums ``S_G`` when the caller computed them over more than this batch
    (a gradient-accumulation window, all processes); by default this batch's, all-reduced when syncing."""
    check_logits(student_logits, teacher_logits)
    class_to_group = class_to_group.to(student_logits.device, non_blocking=True)
    if num_groups == student_logits.shape[1]:
        class_sums = None if group_sums is None else group_sums.index_select(0, class_to_group)
        return _singleton_group_terms(
            student_logits, teacher_logits, temperature, alpha, rebalance, sync_across_processes, class_sums
        )
    loss, cross, within = _LTKDFunction.apply(
        student_logits, teacher_logits, class_to_group, num_groups, temperature, alpha, beta,
        rebalance, reweight, sync_across_processes, group_sums,
    )
    return {"loss": loss, "cross_group": cross, "within_group": within}


def ltkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    class_to_group: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 6.0,
    beta: float = 6.0,
    rebalance: bool = True,
    reweight: bool = True,
    sync_across_processes: bool = True,
    num_groups: int | None = None,
) -> dict[str, torch.Tensor]:
    """Long-Tailed Knowledge Distillation loss (Kim, CVPR 2026, Eq. 14).

    ``loss = T^2 * (alpha * cross_group + beta * within_group)`` where, averaged over the batch,
    ``cross_group = KL(b̂_t || b_s)`` (``b̂_t`` the rebalanced teacher group mass, or ``b_t`` with
    ``rebalance=False``) and ``within_group = sum_G KL(q_t,G || q_s,G)`` (with ``reweight=False``:
    ``sum_G b_t,G KL(q_t,G || q_s,G)``, the paper's ablation; with both off and ``alpha = beta = 1`` the loss
    is plain KD).

    Args:
        student_logits, teacher_logits: ``(batch, C)`` logits in any float dtype; the math runs in float32
            (float64 for float64 input). No gradient flows into ``teacher_logits``.
        class_to_group: ``(C,)`` LongTensor of group ids ``0..K-1`` (``ClassGroups.index()``).
        num_groups: ``K``; inferred as ``max id + 1`` when omitted.
        sync_across_processes: all-reduce the batch group sums used for rebalancing when
            ``torch.distributed`` is initialised, so N processes x b samples rebalance like one x N*b.
            Every process must then call the loss, as with DDP.

    Returns:
        ``{"loss", "cross_group", "within_group"}``, 0-dim tensors in the math's dtype (float32, float64 for
        float64 input); only ``loss`` is weighted.

    Validating ``class_to_group`` here reads it (one device sync on an accelerator); ``LTKDLoss``
    validates it once at construction instead.
    """
    check_logits(student_logits, teacher_logits)
    temperature = check_positive("temperature", temperature)
    alpha = check_nonnegative("alpha", alpha)
    beta = check_nonnegative("beta", beta)
    num_groups = check_class_to_group(class_to_group, student_logits.shape[1], num_groups)
    return ltkd_terms(
        student_logits, teacher_logits, class_to_group, num_groups, temperature=temperature, alpha=alpha,
        beta=beta, rebalance=check_flag("rebalance", rebalance), reweight=check_flag("reweight", reweight),
        sync_across_processes=check_flag("sync_across_processes", sync_across_processes),
    )


@register_loss("ltkd")
class LTKDLoss(DistillationLoss):
    """``ltkd_loss`` as a loss object: the group map is validated once, here, not per batch.

    Pass ``groups`` (a ``ClassGroups``), or ``class_counts`` and ``num_groups`` (default 3, the paper's
    head / medium / tail split) to build them with ``ClassGroups.from_counts``.
    """

    def __init__(
        self,
        *,
        groups: ClassGroups | None = None,
        class_counts: Sequence[int] | None = None,
        num_groups: int | None = None,
        temperature: float = 4.0,
        alpha: float = 6.0,
        beta: float = 6.0,
        rebalance: bool = True,
        reweight: bool = True,
        sync_across_processes: bool = True,
    ) -> None:
        super().__init__()
        if groups is None:
            if class_counts is None:
                raise ValueError(
                    "LTKD needs the class groups: pass groups=ClassGroups.from_counts(counts, num_groups), "
                    "or class_counts=[n_0, ..., n_{C-1}] (and optionally num_groups, default 3)."
                )
            groups = ClassGroups.from_counts(class_counts, 3 if num_groups is None else num_groups)
        elif num_groups is not None and num_groups != groups.num_groups:
            raise ValueError(
                f"num_groups={num_groups} disagrees with the {groups.num_groups} groups passed in groups; "
                "drop num_groups or rebuild the groups with it."
            )
        self.temperature = check_positive("temperature", temperature)
        self.alpha = check_nonnegative("alpha", alpha)
        self.beta = check_nonnegative("beta", beta)
        self.rebalance, self.reweight = check_flag("rebalance", rebalance), check_flag("reweight", reweight)
        self.sync_across_processes = check_flag("sync_across_processes", sync_across_processes)
        class_to_group = groups.index()
        self.num_groups = check_class_to_group(class_to_group, groups.num_classes, groups.num_groups)
        self.register_buffer("class_to_group", class_to_group, persistent=False)
        self.single_class_groups = [name for name, size in zip(groups.names, groups.sizes) if size == 1]

    @torch.no_grad()
    def batch_statistics(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``S_G = sum_x b_t,G(x)`` over ``teacher_logits``' rows, unreduced across processes: sum it over the
        micro-batches of a gradient-accumulation window (and all-reduce it) and pass the total to ``forward``
        as ``batch_statistics``, so the window rebalances as one batch."""
        log_probs = torch.log_softmax(teacher_logits.detach().to(compute_dtype(teacher_logits)) / self.temperature, 1)
        probs = log_probs.to(statistics_dtype(log_probs.device)).exp()  # as _batch_group_sums: no float32 underflow
        sums = probs.new_zeros(self.num_groups)
        return sums.index_add_(0, self.class_to_group.to(probs.device), probs.sum(0))

    def forward(self, student_logits, teacher_logits, labels=None, *, student_features=None, teacher_features=None,
                batch_statistics=None):
        check_logits(student_logits, teacher_logits)
        if student_logits.shape[1] != self.class_to_group.numel():
            raise ValueError(
                f"the logits have {student_logits.shape[1]} classes but the LTKD groups cover "
                f"{self.class_to_group.numel()}; build the groups from the same class list as the models."
            )
        return ltkd_terms(
            student_logits, teacher_logits, self.class_to_group, self.num_groups,
            temperature=self.temperature, alpha=self.alpha, beta=self.beta, rebalance=self.rebalance,
            reweight=self.reweight, sync_across_processes=self.sync_across_processes, group_sums=batch_statistics,
        )

    def describe(self) -> str:
        target = "rebalanced b_t" if self.rebalance else "b_t"
        weight = "" if self.reweight else "b_t,G*"
        if len(self.single_class_groups) == self.num_groups:
            note = "; every group holds one class, so the within-group term is 0 and beta and reweight change nothing"
        elif self.single_class_groups:
            note = f"; groups {self.single_class_groups} hold one class each, so their within-group KL is 0"
        else:
            note = ""
        return (
            f"LTKD: T^2*({self.alpha}*KL({target}||b_s) + {self.beta}*sum_G {weight}KL(q_t,G||q_s,G)), "
            f"T={self.temperature}, K={self.num_groups}{note}"
        )
