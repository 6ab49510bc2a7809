"""AWT image-to-class scores for a whole batch of images and every class at once.

Shapes follow the pipeline: image views (batch, views, dim), class prompts (classes, prompts, dim),
logits (batch, views, prompts, classes) with ``logit = s * cosine``. A SigLIP-style ``logit_bias``
shifts every class equally, so it is left out of the transport (and of the scores).

Three steps, each its own function, so that what scored an image can be shown:

* the problem (:func:`awt_problem`, :func:`awt_problem_from_logits`): the Gibbs kernels
  ``exp((cos - 1) / eps)`` of every (image, class) pair and the marginals, view weights ``a`` and
  prompt weights ``b`` (:mod:`awt.weighting`);
* the solve (:func:`solve`): Sinkhorn scalings ``u``, ``v`` and each image's iterations
  (:mod:`awt.transport`); an image's classes are solved together, as its stopping rule averages over them;
* the score (:func:`transport_scores`): ``s * sum(T * cos)`` with ``T = diag(u) K diag(v)``.

:func:`awt_scores_from_features` chains them over chunks of images; :func:`awt_explain` returns
the plans of chosen classes, solved exactly as they were scored.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import SettingError
from .transport import Solution, Workspace, gibbs, plan_costs, solve_grouped
from .weighting import image_weights, prompt_weights


@dataclass(frozen=True)
class AWTConfig:
    """The method's hyper-parameters; the defaults are the paper's."""

    image_temperature: float = 0.5
    text_temperature: float = 0.5
    epsilon: float = 0.1
    max_iter: int = 100
    tol: float = 1e-2

    def __post_init__(self) -> None:
        """Refuse what the scorer cannot compute with (a SettingError naming the field and the value):
        temperatures and epsilon divide, and an epsilon under 1e-3 underflows the float32 kernel
        ``exp((cos - 1) / epsilon)`` to zero for any cosine below 0.9, so every score would be NaN."""
        for key, low in (("image_temperature", 1e-6), ("text_temperature", 1e-6), ("epsilon", 1e-3), ("tol", 0.0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise SettingError(key, value, f"a finite number >= {low:g}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise SettingError("max_iter", self.max_iter, "a whole number >= 1")


# Elements of the (images, classes, views, prompts) kernel held at once (memory), and of the block
# of cosines one matrix product makes (its prompt sums are read while it is in cache; fewer, larger
# products run faster: 16 MiB measured best on a 2-core CPU; on a GPU larger: each costs launches).
_KERNEL_ELEMENTS = {"cpu": 1 << 28, "cuda": 1 << 28}
_BLOCK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 25}
_PROMPTS_MAJOR_DEVICES = {"cpu"}  # where the kernel is stored in the GEMM's own (prompts-major) order
# There, the GEMM's rows (images x views values) are padded to whole 16-float vectors: MKL's kernels
# are slow on a partial one (4 images, 204 -> 208 columns: 15 % faster; 1 image: 51 -> 64, 16 %).
_ROW_ALIGN = 16


_WORKSPACE = Workspace()   # the CPU scorer's kernel buffer (at most the kernel budget)


def _buffer(numel: int, device: torch.device) -> torch.Tensor | None:
    """Where the scorer's own loops put a chunk's kernel: the kept buffer on the CPU (a GPU's
    caching allocator keeps memory by itself)."""
    return _WORKSPACE.take(numel) if device.type == "cpu" else None


@dataclass
class AWTProblem:
    """The transport problems of a batch of images against every class: cost ``1 - cos`` between
    each view and each prompt of a class, marginals ``a`` and ``b``, entropic regularisation ``eps``.

    The Gibbs kernel ``K = exp((cos - 1) / eps)`` is held as ``cos / eps``, what the matrix product
    of the embeddings gives: the solver exponentiates a block at a time while the block is in
    cache, and the plan's cost then needs no logarithm.
    """

    scaled_cosines: torch.Tensor   # (batch, classes, views, prompts) cos / eps; a view
    a: torch.Tensor                # (batch, views) view weights, the same for every class
    b: torch.Tensor                # (batch, classes, prompts) prompt weights (0 on padding prompts)
    logit_scale: float
    epsilon: float

    @property
    def log_offset(self) -> float:
        """``log K = scaled_cosines + log_offset``."""
        return -1.0 / self.epsilon

    def kernel(self, index=...) -> torch.Tensor:
        """``K[index]``, e.g. ``problem.kernel((image, classes))`` -> (k, views, prompts)."""
        return gibbs(self.scaled_cosines[index], self.log_offset)

    def cosines(self, index=...) -> torch.Tensor:
        """``cos[index]`` of views and prompts."""
        return self.epsilon * self.scaled_cosines[index]


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def _image_chunk(views: int, prompts: int, classes: int, device: torch.device) -> int:
    return max(1, _KERNEL_ELEMENTS.get(device.type, 1 << 26) // (classes * views * prompts))


def _class_chunk(images: int, views: int, prompts: int, classes: int, class_chunk: int | None,
                 device: torch.device) -> int:
    if class_chunk is not None:
        return max(1, min(int(class_chunk), classes))
    return max(1, min(classes, _BLOCK_ELEMENTS.get(device.type, 1 << 19) // (images * views * prompts)))


def _row_length(batch: int, views: int, device: torch.device, from_logits: bool = False) -> int:
    """Values per row of the prompts-major kernel's storage: ``batch * views``, padded (see _ROW_ALIGN)."""
    if device.type not in _PROMPTS_MAJOR_DEVICES or from_logits:
        return batch * views
    return -(-batch * views // _ROW_ALIGN) * _ROW_ALIGN


def _kernel_numel(batch: int, classes: int, views: int, prompts: int, device: torch.device,
                  from_logits: bool = False) -> int:
    """Elements of memory :func:`_new_kernel` takes."""
    return classes * prompts * _row_length(batch, views, device, from_logits)


def _new_kernel(batch: int, classes: int, views: int, prompts: int, device: torch.device,
                out: torch.Tensor | None = None, from_logits: bool = False) -> torch.Tensor:
    """An empty (batch, classes, views, prompts) tensor for ``cos / eps``, in ``out`` (flat, float32) if given.

    On the CPU it is a view of prompts-major storage, (classes, prompts, batch, views): the order in
    which ``prompts @ views.T`` writes a block of classes, so no transpose is ever made (and with
    the views as the narrow operand the product runs faster than the other way round); a
    problem's kernel is then ``prompts`` rows of ``views`` values, next to the other images'
    problems of the same class; each (class, prompt) row of ``batch * views`` values is padded to
    :func:`_row_length`. ``from_logits``: views-major, (batch, views, classes, prompts), the
    nearest order to the logits' (batch, views, prompts, classes). Elsewhere it is contiguous."""
    numel = _kernel_numel(batch, classes, views, prompts, device, from_logits)
    storage = torch.empty(numel, device=device) if out is None else out[:numel]
    if device.type in _PROMPTS_MAJOR_DEVICES:
        if from_logits:
            return storage.view(batch, views, classes, prompts).transpose(1, 2)
        rows = storage.view(classes, prompts, -1)[..., :batch * views]
        return rows.unflatten(2, (batch, views)).permute(2, 0, 3, 1)
    return storage.view(batch, classes, views, prompts)


def awt_marginals(
    mean_logits: torch.Tensor, view0_logits: torch.Tensor, config: AWTConfig,
    prompt_mask: torch.Tensor | None = None, uniform: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Marginals of the transport problems.

    Args:
        mean_logits: (batch, views, classes) logits averaged over each class's (real) prompts.
        view0_logits: (batch, prompts, classes) logits of view 0 for every prompt.
        prompt_mask: (classes, prompts) bool, real prompts; padding gets weight 0.
        uniform: the 'awt-uniform' ablation: ``1/views`` and ``1/real prompts``.
    Returns:
        ``a`` (batch, views) shared by all classes, ``b`` (batch, prompts, classes).
    """
    batch, views, _ = mean_logits.shape
    prompts, classes = view0_logits.shape[1:]
    if uniform:
        a = mean_logits.new_full((batch, views), 1.0 / views, dtype=torch.float32)
        if prompt_mask is None:
            b = mean_logits.new_full((batch, prompts, classes), 1.0 / prompts, dtype=torch.float32)
        else:
            real = prompt_mask.T.float()
            b = (real / real.sum(0, keepdim=True)).expand(batch, prompts, classes)
        return a, b
    a = image_weights(mean_logits, config.image_temperature)
    b = prompt_weights(mean_logits[:, 0], view0_logits, config.text_temperature, prompt_mask)
    return a, b


def _prompt_counts(prompt_mask: torch.Tensor | None, classes: int, prompts: int, device: torch.device) -> torch.Tensor:
    """(classes,): real prompts of each class."""
    if prompt_mask is None:
        return torch.full((classes,), float(prompts), device=device)
    return prompt_mask.to(device).sum(1).clamp_min(1).float()


def awt_problem_from_logits(
    logits: torch.Tensor, logit_scale: float | torch.Tensor, config: AWTConfig = AWTConfig(),
    prompt_mask: torch.Tensor | None = None, uniform: bool = False, out: torch.Tensor | None = None,
) -> AWTProblem:
    """The problems of logits (batch, views, prompts, classes), ``s * cos``; view 0 the
    un-augmented view, prompt 0 the bare template. ``prompt_mask`` (classes, prompts) marks real
    prompts; ``out``: a flat float32 buffer to hold ``cos / eps``."""
    s = float(logit_scale)
    logits = logits.float()
    batch, views, prompts, classes = logits.shape
    real = logits if prompt_mask is None else logits * prompt_mask.T.to(logits.device)
    mean_logits = real.sum(2) / _prompt_counts(prompt_mask, classes, prompts, logits.device)
    a, b = awt_marginals(mean_logits, logits[:, 0], config, prompt_mask, uniform)
    scaled = _new_kernel(batch, classes, views, prompts, logits.device, out, from_logits=True)
    for i in range(batch):
        torch.mul(logits[i].transpose(1, 2), 1.0 / (s * config.epsilon), out=scaled[i].transpose(0, 1))
    return AWTProblem(scaled, a, b.transpose(1, 2).contiguous(), s, config.epsilon)


def awt_problem(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor,
    config: AWTConfig = AWTConfig(), prompt_mask: torch.Tensor | None = None, uniform: bool = False,
    class_chunk: int | None = None, out: torch.Tensor | None = None,
) -> AWTProblem:
    """The problems of L2-normalised embeddings: image views (batch, views, dim), view 0
    un-augmented; class prompts (classes, prompts, dim), prompt 0 the bare template, in any float
    dtype (converted a block at a time); with ``prompt_mask`` (classes, prompts) the padding rows
    of ``text_features`` must be zero. ``out``: a flat float32 buffer to hold ``cos / eps``.

    One matrix product per block of classes gives its cosines; while the block is in cache they
    give the prompt-mean and view-0 logits the weights need.
    """
    s, eps = float(logit_scale), config.epsilon
    img = image_features.float()
    batch, views, dim = img.shape
    classes, prompts, _ = text_features.shape
    scaled = (img / eps).reshape(batch * views, dim)
    cosines = _new_kernel(batch, classes, views, prompts, img.device, out)
    prompts_major = img.device.type in _PROMPTS_MAJOR_DEVICES
    if prompts_major:       # the GEMM writes whole padded rows: zero views make the padding
        width = _row_length(batch, views, img.device)
        rows = cosines.as_strided((classes * prompts, width), (width, 1))
        scaled = F.pad(scaled, (0, 0, 0, width - batch * views))
    mean_logits = img.new_empty(batch, views, classes)
    view0 = img.new_empty(batch, prompts, classes)
    for cls in _chunks(classes, _class_chunk(batch, views, prompts, classes, class_chunk, img.device)):
        txt = text_features[cls].to(img.device, torch.float32).reshape(-1, dim)
        block = cosines[:, cls].permute(1, 3, 0, 2)                       # (chunk, prompts, batch, views)
        if prompts_major:                           # the product lands in place
            _gemm(txt, scaled.T, out=rows[cls.start * prompts:cls.stop * prompts])
        else:                                       # one strided copy
            block.copy_(_gemm(txt, scaled.T).view(block.shape))
        mean_logits[:, :, cls] = block.sum(1).permute(1, 2, 0)
        view0[:, :, cls] = block[..., 0].permute(2, 1, 0)
    mean_logits *= s * eps / _prompt_counts(prompt_mask, classes, prompts, img.device)
    view0 *= s * eps
    a, b = awt_marginals(mean_logits, view0, config, prompt_mask, uniform)
    # (batch, classes, prompts), stored classes first on the CPU, in the order the solver walks
    b = b.permute(2, 0, 1).contiguous().permute(1, 0, 2) if prompts_major else b.transpose(1, 2).contiguous()
    return AWTProblem(cosines, a, b, s, eps)


def solve(problem: AWTProblem, config: AWTConfig = AWTConfig(), window: int | None = None,
          block: int | None = None) -> Solution:
    """Sinkhorn on every (image, class) problem; each image stops as the paper's code does.

    Returns:
        :class:`~awt.transport.Solution`: ``u`` (batch, classes, views), ``v`` (batch, classes,
        prompts), ``iterations`` (batch,), ``cost`` (batch, classes).
    """
    return solve_grouped(problem.scaled_cosines, problem.a[:, None, :], problem.b, config.max_iter, config.tol,
                         window, block, log_offset=problem.log_offset)


def transport_scores(problem: AWTProblem, solution: Solution) -> torch.Tensor:
    """(batch, classes): ``s * sum_{v,p} T[v,p] * cos[v,p]`` with ``T = diag(u) K diag(v)``.

    With ``cos = 1 + eps * log K`` that is ``s * (sum T - eps * sum T * (-log K))``: the logits
    are recovered from the kernel, and after a column update ``sum T = sum b`` exactly.
    """
    cost = solution.cost
    if cost is None:
        cost = plan_costs(problem.scaled_cosines, solution.u, solution.v, problem.b, problem.log_offset)
    return (problem.b.sum(-1) - problem.epsilon * cost) * problem.logit_scale


def awt_scores(
    logits: torch.Tensor, logit_scale: float | torch.Tensor, config: AWTConfig = AWTConfig(), *,
    prompt_mask: torch.Tensor | None = None, uniform: bool = False, class_chunk: int | None = None,
) -> torch.Tensor:
    """AWT scores from logits (batch, views, prompts, classes), ``s * cos(view, prompt of class)``;
    view 0 must be the un-augmented view and prompt 0 the bare template.

    Args:
        logit_scale: the multiplier ``s`` itself (CLIP: 100.0), not its log.
        uniform: the 'awt-uniform' ablation (uniform marginals).
        class_chunk: classes per block (memory and cache bound); the result does not depend on it.
    Returns:
        (batch, classes) float32 scores on the logits' device; each image's scores depend on
        that image alone.
    """
    batch, views, prompts, classes = logits.shape
    scores = logits.new_empty(batch, classes, dtype=torch.float32)
    for imgs in _chunks(batch, _image_chunk(views, prompts, classes, logits.device)):
        out = _buffer(_kernel_numel(imgs.stop - imgs.start, classes, views, prompts, logits.device, True),
                      logits.device)
        problem = awt_problem_from_logits(logits[imgs], logit_scale, config, prompt_mask, uniform, out)
        scores[imgs] = transport_scores(problem, solve(problem, config, block=class_chunk))
    return scores


def awt_scores_from_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    config: AWTConfig = AWTConfig(),
    class_chunk: int | None = None,
    prompt_mask: torch.Tensor | None = None,
    uniform: bool = False,
) -> torch.Tensor:
    """AWT scores from L2-normalised embeddings (see :func:`awt_problem`), a chunk of images at
    a time, never materialising all logits.

    Returns:
        (batch, classes) float32 scores, equal to ``awt_scores`` of the full logits.
    """
    batch, views, _ = image_features.shape
    classes, prompts, _ = text_features.shape
    scores = image_features.new_empty(batch, classes, dtype=torch.float32)
    for imgs in _chunks(batch, _image_chunk(views, prompts, classes, image_features.device)):
        out = _buffer(_kernel_numel(imgs.stop - imgs.start, classes, views, prompts, image_features.device),
                      image_features.device)
        problem = awt_problem(image_features[imgs], text_features, logit_scale, config, prompt_mask, uniform,
                              class_chunk, out)
        scores[imgs] = transport_scores(problem, solve(problem, config, block=class_chunk))
    return scores


@dataclass
class AWTExplanation:
    """What scored chosen classes of a batch of images: the plan and what it weighed.

    ``score == view_scores.sum(-1) == prompt_scores.sum(-1)`` (to float rounding), each the sum of
    ``s * plan * cosine`` over prompts or over views.
    """

    classes: torch.Tensor        # (batch, k) class indices
    a: torch.Tensor              # (batch, views) view weights
    b: torch.Tensor              # (batch, k, prompts) prompt weights
    plan: torch.Tensor           # (batch, k, views, prompts) transport plan T
    cosine: torch.Tensor         # (batch, k, views, prompts)
    score: torch.Tensor          # (batch, k), the scorer's
    view_scores: torch.Tensor    # (batch, k, views): s * sum_p T * cos
    prompt_scores: torch.Tensor  # (batch, k, prompts): s * sum_v T * cos
    iterations: torch.Tensor     # (batch,) Sinkhorn iterations of each image
    all_scores: torch.Tensor | None = None   # (batch, classes): every class's score, from the same solve


def awt_explain(
    image_features: torch.Tensor, text_features: torch.Tensor, prompt_mask: torch.Tensor | None,
    logit_scale: float | torch.Tensor, config: AWTConfig = AWTConfig(), classes=None, uniform: bool = False,
) -> AWTExplanation:
    """The transport behind :func:`awt_scores_from_features` for chosen classes.

    Each image's problem is built and solved over all classes, as the scorer does (the stopping
    rule averages over them), then the chosen classes are read from it.

    Args:
        image_features: (batch, views, dim); text_features: (classes, prompts, dim); prompt_mask
            (classes, prompts) or None, as for the scorer.
        classes: (k,) class indices for every image, or (batch, k); ``None``: every class; or a
            function of a chunk's scores (images, classes) giving its (images, k) indices (e.g. the best k).
    Returns:
        :class:`AWTExplanation`, its ``score`` equal to the scorer's.
    """
    batch, views, dim = image_features.shape
    n_classes, prompts, _ = text_features.shape
    device = image_features.device
    pick = classes if callable(classes) else None
    if pick is None:
        chosen = torch.arange(n_classes) if classes is None else torch.as_tensor(classes, dtype=torch.long)
        chosen = chosen.to(device).expand(batch, -1) if chosen.dim() == 1 else chosen.to(device)
    out = {name: [] for name in ("classes", "a", "b", "plan", "cosine", "score", "iterations", "all_scores")}
    for imgs in _chunks(batch, _image_chunk(views, prompts, n_classes, device)):
        problem = awt_problem(image_features[imgs], text_features, logit_scale, config, prompt_mask, uniform)
        sol = solve(problem, config)
        scores = transport_scores(problem, sol)
        idx = pick(scores).to(device, torch.long) if pick is not None else chosen[imgs]
        out["classes"].append(idx)
        out["all_scores"].append(scores)
        rows = torch.arange(idx.shape[0], device=device)[:, None]
        u, v, kernel = sol.u[rows, idx], sol.v[rows, idx], problem.kernel((rows, idx))
        out["a"].append(problem.a)
        out["b"].append(problem.b[rows, idx])
        out["plan"].append(u[..., :, None] * kernel * v[..., None, :])
        out["cosine"].append(problem.cosines((rows, idx)))
        out["score"].append(scores.gather(1, idx))
        out["iterations"].append(sol.iterations)
    cat = {name: torch.cat(parts) for name, parts in out.items()}
    weighted = float(logit_scale) * cat["plan"] * cat["cosine"]
    return AWTExplanation(cat["classes"], cat["a"], cat["b"], cat["plan"], cat["cosine"], cat["score"],
                          weighted.sum(-1), weighted.sum(-2), cat["iterations"], cat["all_scores"])


def _gemm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` in float32 (into ``out`` if given). On CUDA the operands are rounded to float16
    (tensor cores, float32 accumulation and output): unit vectors lose about 1e-5 of cosine, where
    float32 GEMMs would cost more than the whole rest of the scorer."""
    if a.is_cuda and _half_gemm(a.device):
        product = torch.mm(a.half(), b.half(), out_dtype=torch.float32)
        return product if out is None else out.copy_(product)
    return torch.mm(a.float(), b.float(), out=out)


@functools.cache
def _half_gemm(device: torch.device) -> bool:
    """Whether this torch has float16 GEMMs with float32 output (``out_dtype``) on ``device``."""
    one = torch.ones(1, 1, device=device, dtype=torch.float16)
    try:
        return torch.mm(one, one, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError):
        return False


def mean_prompt(text_features: torch.Tensor, prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(classes, prompts, dim) -> (classes, dim) mean over each class's real prompts (not renormalised)."""
    if prompt_mask is None:
        return text_features.mean(1)
    mask = prompt_mask.to(text_features.device, text_features.dtype).unsqueeze(-1)
    return (text_features * mask).sum(1) / mask.sum(1)


def clip_scores(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    """Plain zero-shot CLIP: view 0 against prompt 0. (batch, views, dim), (classes, prompts, dim) -> (batch, classes)."""
    img = image_features[:, 0].float()
    txt = text_features[:, 0].to(img.device, torch.float32)
    return float(logit_scale) * img @ txt.T


def ensemble_scores(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor, prompt_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Prompt ensembling: view 0 against the normalised mean of each class's prompts -> (batch, classes)."""
    img = image_features[:, 0].float()
    txt = F.normalize(mean_prompt(text_features.to(img.device, torch.float32), prompt_mask), dim=-1)
    return float(logit_scale) * img @ txt.T
