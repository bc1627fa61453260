"""A pure-torch stand-in for flash-attn's kernels (same signatures), so transformers' own flash-attention code path
(position ids -> packed-sequence detection -> `cu_seqlens` -> the varlen call) runs on CPU in tests.

`emulate_flash(monkeypatch)` routes `transformers.modeling_flash_attention_utils._lazy_imports` (where transformers
imports flash-attn) to these kernels and lets `from_pretrained(attn_implementation="flash_attention_2")` load without
flash-attn installed. `leaky=True` gives a varlen kernel that ignores `cu_seqlens` (one causal attention over the
whole flattened row): the cross-sequence leak a packing bug causes.
"""

import torch
import torch.nn.functional as F


def _attend(q, k, v, causal: bool, scale):
    """(S, Hq, D) queries against (S, Hkv, D) keys/values; grouped-query heads share their key/value head."""
    groups = q.shape[1] // k.shape[1]
    k, v = (x.repeat_interleave(groups, dim=1).transpose(0, 1).unsqueeze(0) for x in (k, v))
    # 4-D inputs: CPU's fused (flash) kernel, memory linear in S; 3-D ones take the quadratic math kernel
    out = F.scaled_dot_product_attention(q.transpose(0, 1).unsqueeze(0), k, v, is_causal=causal, scale=scale)
    return out.squeeze(0).transpose(0, 1)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    deterministic=False):  # fmt: skip
    """(B, S, H, D) batches, no padding: causal attention within each row."""
    return torch.stack([_attend(q[b], k[b], v[b], causal, softmax_scale) for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                           deterministic=False):  # fmt: skip
    """(total, H, D) tokens of several sequences laid end to end; attention stays within each `cu_seqlens` segment."""
    bounds = cu_seqlens_q.tolist()
    assert bounds == cu_seqlens_k.tolist() and bounds[-1] == q.shape[0], "self-attention over the whole row"
    segments = [
        _attend(q[a:b], k[a:b], v[a:b], causal, softmax_scale) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(segments)


def leaky_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                                 dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                                 deterministic=False):  # fmt: skip
    return _attend(q, k, v, causal, softmax_scale)


def emulate_flash(monkeypatch, leaky: bool = False) -> None:
    import transformers.modeling_flash_attention_utils as fa
    from transformers import PreTrainedModel

    varlen = leaky_flash_attn_varlen_func if leaky else flash_attn_varlen_func

    def lazy_imports(implementation, attention_wrapper=None, allow_all_kernels=False):
        return flash_attn_func, varlen, None, fa._pad_input, fa._unpad_input

    monkeypatch.setattr(fa, "_lazy_imports", lazy_imports)
    monkeypatch.setattr(fa, "_loaded_implementation", None)  # transformers caches the loaded kernels by name
    check = PreTrainedModel._check_and_adjust_attn_implementation

    def accept_flash(self, attn_implementation, *args, **kwargs):  # skips "is flash-attn installed / on CUDA"
        if attn_implementation == "flash_attention_2":
            return attn_implementation
        return check(self, attn_implementation, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_check_and_adjust_attn_implementation", accept_flash)


def leaky_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """An attention function that ignores the mask (so packed boundaries): causal attention over the whole row. Right
    padding never matters to causal attention, so padded batches stay right and only packed ones leak."""
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling)
    return out.transpose(1, 2).contiguous(), None
