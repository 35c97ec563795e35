"""Compiled loops for ``sparsity.kernels`` (imported only when numba is installed and wanted).

The loop takes the address of the tensor's data rather than a numpy view of it: making the
view costs ~3.5 us a call inside a training step (the caches are full of tensors), more than
a tenth of the loop itself on LeNet-300-100. The caller guarantees that the address points
to ``mask.size`` contiguous elements of the kernel's dtype that stay alive during the call.

Not cached on disk (``cache=False``): numba's cache can race when several processes compile
the same function at once (numba issues #4807, #10128: DDP ranks and sweep workers start
together), and these loops compile in well under a second per process.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def _void_pointer(typingctx: Any, address: Any) -> Any:  # pragma: no cover - compiled
    """int64 address -> void* (numba's documented way to build a carray from an address)."""
    sig = types.voidptr(address)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


def _make(dtype: Any) -> Any:
    @numba.njit(nogil=True, cache=False)
    def zero_where_false(address: int, mask: Any) -> None:  # pragma: no cover - compiled
        """values[i] <- values[i] if mask[i] else +0.0 over the ``mask.size`` elements at
        ``address``."""
        m = mask.reshape(mask.size)
        v = numba.carray(_void_pointer(address), m.size, dtype)
        for i in range(m.size):
            v[i] = v[i] if m[i] else 0

    return zero_where_false


KERNELS = {"float32": _make(np.float32), "float64": _make(np.float64)}
