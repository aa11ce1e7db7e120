"""Label checks of the cross-entropy ops: dtype and shape, the range [0, V) or ``ignore_index``, the kept rows."""
from __future__ import annotations

import torch

from sslfast.ops._input_checks import check_tensor

__all__ = ["_validate_labels", "_keep_rows", "_check_label_range"]


def _validate_labels(op, labels, lead_shape):
    check_tensor(op, "labels", labels, dtypes=(torch.int64, torch.int32))
    if tuple(labels.shape) != tuple(lead_shape):
        raise ValueError(f"{op}: labels shape {tuple(labels.shape)} must equal the leading shape {tuple(lead_shape)}")


def _keep_rows(op, labels, v, ignore_index):
    """Indices of the non-ignored rows and their count; raises on labels outside [0, V). One host sync."""
    keep = labels != ignore_index
    bad = keep & ((labels < 0) | (labels >= v))
    n_bad, n_keep = torch.stack([bad.sum(), keep.sum()]).tolist()
    _raise_if_bad(op, labels, bad, n_bad, v, ignore_index)
    return torch.nonzero_static(keep, size=n_keep).squeeze(1), n_keep


def _check_label_range(op, labels, v, ignore_index):
    """Raises on labels outside [0, V) that are not ``ignore_index``. One host sync."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= v))
    _raise_if_bad(op, labels, bad, int(bad.sum()), v, ignore_index)


def _raise_if_bad(op, labels, bad, n_bad, v, ignore_index):
    if n_bad:
        first = labels[bad][0].item()
        raise ValueError(f"{op}: labels must be in [0, {v}) or equal ignore_index={ignore_index}; "
                         f"found {n_bad} outside, e.g. {first}")
