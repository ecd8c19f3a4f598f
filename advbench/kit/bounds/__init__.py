"""Bound propagation through a Keras model, the engine of the `ibp`, `crown` and
`alpha_crown` certifiers and of certified training: interval bound propagation (Gowal et
al. 2018), CROWN (Zhang et al. 2018), alpha-CROWN (Xu et al. 2021) and
branch and bound over ReLU splits with beta-CROWN's split multipliers (Wang et al. 2021).

The model is read as a graph of operators (:func:`read_graph`), one class per layer kind
with its own forward, interval and backward rules (:mod:`.operators`: Dense, Conv2D,
ReLU, softplus, Flatten, Reshape, max- and average-pooling, global average pooling,
batch normalization in inference mode, Dropout, Rescaling, ZeroPadding2D, residual
Add); any other layer is refused by name, unless a plugin registered a rule for it
(:func:`register_bound_rule`, see docs/bound-rules.md).  The input set is a linf or l2 ball around x
intersected with [0, 1].  The margins ``f_c - f_j`` are bounded with the last Dense
layer folded in; an example is certified at eps when every margin's lower bound is
positive.
"""

from advbench.kit.bounds.bab import SplitCrown, branch_and_bound
from advbench.kit.bounds.crown import AlphaCrown, Crown
from advbench.kit.bounds.graph import bound_rules, node_sizes, read_graph, register_bound_rule
from advbench.kit.bounds.interval import fold_head, ibp, ibp_margins, margin_matrix
from advbench.kit.bounds.memory import bytes_per_example, require_memory
from advbench.kit.bounds.sets import input_box, l2_norm

__all__ = [
    "AlphaCrown",
    "Crown",
    "SplitCrown",
    "bound_rules",
    "branch_and_bound",
    "bytes_per_example",
    "fold_head",
    "ibp",
    "ibp_margins",
    "input_box",
    "l2_norm",
    "margin_matrix",
    "node_sizes",
    "read_graph",
    "register_bound_rule",
    "require_memory",
]
