"""advbench's own machinery, beneath the spec and the runs, that plugins do not build with
(they use :mod:`advbench.kit`): dataset subsets and loading (:mod:`.data`), pretrained
models from files (:mod:`.models`), the training loop defenses plug into
(:mod:`.training`) and the trust checks, whether an evaluation can be believed
(:mod:`.checks`)."""
