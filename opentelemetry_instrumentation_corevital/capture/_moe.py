"""Mixture-of-experts router statistics per layer and row (computed in the step reduce, ``_reduce``).

* router entropy: entropy of the router's softmax over experts, normalised by
  ln(experts) to [0, 1] (1 = the router cannot choose, 0 = one expert);
* expert load balance: normalised entropy of how often each expert has been
  picked (top-k) for this sequence so far (1 = every expert used equally,
  0 = always the same experts).
"""

from __future__ import annotations

MOE_COLUMNS = ("router_entropy", "expert_load_balance")
