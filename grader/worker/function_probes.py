"""Probes of the course's functions and layers: call them on given inputs, with gradients.

Outputs, autograd gradients and the student's own backward passes come back as
plain data; numeric gradients are computed here for comparison in the harness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from grader.worker.probe_support import (
    DTYPES,
    NotImplementedYet,
    _leaf,
    _placeholder,
    _require_implemented,
    _resolve,
    _to,
)


def _backward(outputs: list[torch.Tensor], upstream: list[torch.Tensor]) -> None:
    """Back-propagate sum(out * g) for each (output, upstream gradient) pair."""
    total = None
    for out, g in zip(outputs, upstream, strict=True):
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            continue  # the missing gradients are what the harness will report
        term = (out * g.to(out)).sum()
        total = term if total is None else total + term
    if total is not None:
        total.backward()


def _fresh(args: dict, leaves: dict | None = None) -> dict:
    """Copies of every tensor argument for one call of student code.

    Leaves (autograd inputs) go in as clones, so in-place changes stay legal.
    """
    leaves = leaves or {}
    return {k: (leaves[k].clone() if k in leaves else
                v.clone() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}


def function(m, name: str, args: dict, take: list[int] | None = None,
             grad_wrt: list[str] | None = None, upstream: list | None = None,
             device: str = "cpu", dtype: str | None = None) -> dict:
    """Call a top-level function; optionally autograd gradients w.r.t. some arguments."""
    args = {k: _to(v, device, dtype) for k, v in args.items()}
    leaves = {k: _leaf(args[k]) for k in grad_wrt or []}
    result = _require_implemented(_resolve(m, name)(**_fresh(args, leaves)), name)
    outputs = result
    if take is not None:
        if not isinstance(result, (tuple, list)):
            raise TypeError(f"{name} should return a tuple, got {type(result).__name__}")
        outputs = [result[i] for i in take]
    reply = {"outputs": outputs}
    if grad_wrt:
        outs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        _backward(list(outs), [_to(u, device) for u in upstream or []])
        reply["grads"] = {k: leaves[k].grad for k in grad_wrt}
    return reply


def _numeric_grad(f: Callable[[dict], torch.Tensor], args: dict, key: str,
                  upstream: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Centred differences of sum(f(args) * upstream) w.r.t. every entry of args[key].

    Every evaluation gets fresh copies of all arguments, so a forward that changes
    its inputs in place cannot corrupt the next one.
    """
    grad = torch.zeros_like(args[key])
    gflat = grad.view(-1)
    for i in range(gflat.numel()):
        values = []
        for step in (h, -h):
            shifted = _fresh(args)
            shifted[key].view(-1)[i] += step
            values.append((f(shifted) * upstream).sum().item())
        gflat[i] = (values[0] - values[1]) / (2 * h)
    return grad


def manual_backward(m, forward: str, backward: str, args: dict, upstream: torch.Tensor,
                    numeric: bool = False, autograd: bool = False, device: str = "cpu",
                    dtype: str | None = None) -> dict:
    """A hand-written backward pass, plus the student's own forward's numeric/autograd grads.

    The order of ``args`` is the order of the backward's returned gradients
    (x, prev_h/h0, Wx, Wh, b), as the contract fixes.
    """
    fwd, bwd = _resolve(m, forward), _resolve(m, backward)
    args = {k: _to(v, device, dtype) for k, v in args.items()}
    upstream = _to(upstream, device, dtype)

    def run_forward(values: dict) -> tuple[torch.Tensor, Any]:
        result = fwd(**values)
        if not isinstance(result, (tuple, list)) or _placeholder(result) or result[0] is None:
            raise NotImplementedYet(f"{forward} returned None, and {backward} is checked "
                                    f"through it: implement {forward} first")
        return result[0], result[1] if len(result) > 1 else None

    with torch.no_grad():
        _, cache = run_forward(_fresh(args))
        # The student's backward gets its own copy of the upstream gradient.
        grads = _require_implemented(bwd(upstream.clone(), cache), backward)
    reply: dict[str, Any] = {"manual": grads}
    if numeric:
        with torch.no_grad():
            reply["numeric"] = [_numeric_grad(lambda a: run_forward(a)[0], args, k, upstream)
                                for k in args]
    if autograd:
        leaves = {k: _leaf(v) for k, v in args.items()}
        out, _ = run_forward(_fresh(args, leaves))
        _backward([out], [upstream])
        reply["autograd"] = [leaves[k].grad for k in args]
    return reply


def _build(m, cls: str, init: list, params: dict, device: str, dtype: str | None) -> nn.Module:
    module = _resolve(m, cls)(*init)
    if dtype is not None:
        module = module.to(DTYPES[dtype])
    module = module.to(device)
    with torch.no_grad():
        for name, value in params.items():
            target = getattr(module, name, None)
            if not isinstance(target, torch.Tensor):
                raise AttributeError(f"{cls} has no parameter {name!r}: keep the provided "
                                     "parameter names")
            if target.shape != value.shape:
                raise ValueError(f"{cls}.{name} has shape {tuple(target.shape)}, expected "
                                 f"{tuple(value.shape)}: keep the provided parameter shapes")
            target.copy_(value)
    return module


def module(m, cls: str, init: list, params: dict, method: str, args: dict,
           grad_wrt: list[str] | None = None, upstream: list | None = None,
           device: str = "cpu", dtype: str | None = None) -> dict:
    """Build ``cls(*init)``, load ``params``, call ``method(**args)``; optional gradients.

    ``grad_wrt`` names arguments and/or parameters ("param:Wx") to differentiate.
    """
    mod = _build(m, cls, init, params, device, dtype)
    args = {k: _to(v, device, dtype) for k, v in args.items()}
    wrt = grad_wrt or []
    leaves = {k: _leaf(args[k]) for k in wrt if not k.startswith("param:")}
    mod.zero_grad(set_to_none=True)
    fn = mod if method == "forward" else getattr(mod, method)
    outputs = _require_implemented(fn(**_fresh(args, leaves)), f"{cls}.{method}")
    reply: dict[str, Any] = {"outputs": outputs}
    if wrt:
        outs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        _backward(list(outs), [_to(u, device) for u in upstream or []])
        reply["grads"] = {
            k: (getattr(mod, k[6:]).grad if k.startswith("param:") else leaves[k].grad)
            for k in wrt
        }
    return reply
