"""Smooth Adversarial Training (Xie et al. 2020; thesis "Boosting Adversarial Training in
Adversarial Machine Learning", ch. 4): one module per table / figure, shared helpers in
``_common``, the thesis' numbers as data in ``paper_values``.

* ``table10``      -> ``smooth-at-table10``: ReLU forward, smooth backward for the attacker /
  the optimizer / both / neither (Table X), plus Sec. 4.3.3's PGD-2 and 2x-schedule alternatives.
* ``activations``  -> ``smooth-at-activations``: ReLU vs each smooth activation (Fig. 30, the
  SmoothReLU result of Sec. 4.4.2 and the CIFAR-10 statements of Sec. 4.7), with the loss
  landscapes of the ReLU and a smooth model (Fig. 32).
* ``celu``         -> ``smooth-at-celu``: ELU vs CELU over a in {1, 1.2, ..., 2.0} (Table XI).

The thesis' numbers are ImageNet ResNet-50 figures (PGD-1 training at eps 4/255, PGD-200
evaluation); the CPU scale here is a small CNN on CIFAR-10 images, so the tables compare the
direction of each claim, not the values.
"""
