"""The kit: what plugins build with, beside the contract (:mod:`advbench.contract`).

* :mod:`.backend`: gradients, compilation and loops, one module per Keras backend;
* :mod:`.lp`, :mod:`.losses`, :mod:`.rng`, :mod:`.adam`: geometry of the threat models,
  the losses attacks maximize, random draws that agree on every backend, Adam on tensors;
* :mod:`.layers`, :mod:`.structure`, :mod:`.models`: advbench's Keras layers, reading a
  model's structure, models from files;
* :mod:`.target`: the model under evaluation as attacks and certifiers query it;
* :mod:`.pgd`, :mod:`.boundary`: projected gradient descent and helpers at the decision
  boundary, which several attacks and defenses share;
* :mod:`.bounds`: the bound-propagation engine (IBP, CROWN, alpha-CROWN), one class per operator;
* :mod:`.data`, :mod:`.datafiles`: datasets as arrays, dataset files;
* :mod:`.training`: the training loop defenses plug into;
* :mod:`.checks`: whether an evaluation can be trusted.

Nothing here knows of specs, runs or leaderboards.
"""
