"""The kit: what plugins build with, beside the contract (:mod:`advbench.contract`).

* :mod:`.backend`: gradients, compilation and loops, one module per Keras backend;
* :mod:`.lp`, :mod:`.losses`, :mod:`.rng`, :mod:`.adam`: geometry of the threat models,
  the losses attacks maximize, random draws that agree on every backend, Adam on tensors;
* :mod:`.layers`, :mod:`.structure`: advbench's Keras layers, reading a model's structure;
* :mod:`.target`: the model under evaluation as attacks and certifiers query it;
* :mod:`.pgd`, :mod:`.boundary`: projected gradient descent and helpers at the decision
  boundary, which several attacks and defenses share;
* :mod:`.bounds`: the bound-propagation engine (IBP, CROWN, alpha-CROWN), one class per operator;
* :mod:`.datafiles`: reading and caching dataset files;
* :mod:`.search`: the searches attacks and certifiers share (bisection of a radius,
  keep-the-smaller point, the still-rising indicator).

advbench's own machinery that plugins do not use (dataset subsets, pretrained models,
the training loop, the trust checks) is in :mod:`advbench.core`.

Nothing here knows of specs, runs or leaderboards.
"""
